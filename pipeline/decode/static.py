"""Static ABI types decoded column-wise from blocks of words: one numpy/pyarrow operation per
column (or per element of a fixed-size array, per field of a tuple), none per log.

Each decoder takes the (m, 32 * head_words) uint8 rows holding a value of its type and gives the
Arrow column, the float64 companion for wide integers, and which rows are canonical: padding
checked exactly as eth_abi's decoder checks it (uintN/address: high bits zero; intN: sign-extended;
bool: 0 or 1; bytesN: low bytes zero). A row that is not canonical fails the log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.decode import ints
from pipeline.decode.abitypes import WIDE_BITS, WORD, AbiType
from pipeline.decode.binary import bytes_column


@dataclass
class Column:
    """Decoded values of m rows; `ok` is False where the row is not a canonical encoding."""

    values: pa.Array
    f64: pa.Array | None
    ok: np.ndarray


def decode_static(kind: AbiType, block: np.ndarray, hex_output: bool) -> Column:
    """The values of a static type, from rows of exactly kind.head_words words."""
    if kind.kind == "array":
        return _array(kind, block, hex_output)
    if kind.kind == "tuple":
        return _tuple(kind, block, hex_output)
    values = ints.words(block)
    if kind.kind == "address":
        return Column(bytes_column(block[:, 12:], hex_output), None, ints.bits_zero(values, 160))
    if kind.kind == "bool":
        flags = pa.array((values[:, 3] & np.uint64(1)).astype(bool))
        return Column(flags, None, ints.bits_zero(values, 1))
    if kind.kind == "fixed_bytes":
        ok = ints.bits_zero(values, 0, 8 * (WORD - kind.size))
        return Column(bytes_column(block[:, : kind.size], hex_output), None, ok)
    signed = kind.kind == "int"
    ok = ints.sign_extended(values, kind.size) if signed else ints.bits_zero(values, kind.size)
    if kind.size <= WIDE_BITS:
        return Column(pa.array(ints.small_ints(values, kind.size, signed)), None, ok)
    decimals, floats = ints.wide_ints(values, signed)
    return Column(decimals, pa.array(floats), ok)


def topic_column(kind: AbiType, topics: np.ndarray, hex_output: bool) -> Column:
    """An indexed parameter from its (m, 32) topic: the value of an elementary type, else the
    keccak topic itself as bytes."""
    if kind.kind in ("string", "bytes", "array", "tuple"):
        return Column(bytes_column(topics, hex_output), None, np.ones(len(topics), bool))
    return decode_static(kind, topics, hex_output)


def _array(kind: AbiType, block: np.ndarray, hex_output: bool) -> Column:
    count, length = len(block), kind.size
    items = decode_static(kind.item, block.reshape(count * length, -1), hex_output)
    offsets = pa.array(np.arange(count + 1, dtype=np.int32) * length)
    f64 = None if items.f64 is None else pa.ListArray.from_arrays(offsets, items.f64)
    ok = items.ok.reshape(count, length).all(axis=1)
    return Column(pa.ListArray.from_arrays(offsets, items.values), f64, ok)


def _tuple(kind: AbiType, block: np.ndarray, hex_output: bool) -> Column:
    ok = np.ones(len(block), bool)
    values, floats = [], []
    start = 0
    for _, field in kind.fields:
        end = start + WORD * field.head_words
        column = decode_static(field, block[:, start:end], hex_output)
        values.append(column.values)
        if column.f64 is not None:
            floats.append(column.f64)
        ok &= column.ok
        start = end
    names = [name for name, _ in kind.fields]
    wide_names = [name for name, field in kind.fields if field.wide]
    f64 = pa.StructArray.from_arrays(floats, names=wide_names) if floats else None
    return Column(pa.StructArray.from_arrays(values, names=names), f64, ok)
