"""The columns of a decoded event table: their names and Arrow types.

block_number, [block_timestamp,] transaction_index, transaction_hash, log_index, address,
chain_id, then one column per parameter in declaration order, named after it, and right after
a parameter that holds integers wider than 64 bits, `<name>_f64` (the same shape, float64 in
place of each such integer). A parameter whose name is already taken (`address`, or `x_f64`
beside a wide `x`) is called `event__<name>`, as cryo names every decoded column.

ABI type -> column: address: binary (20 bytes); bool: bool; (u)intN, N <= 64: the narrowest
(u)int8/16/32/64; wider: exact decimal string; bytesN, bytes: binary; string: utf8; arrays: list;
tuples: struct. An indexed string, bytes, array or tuple is the 32-byte keccak topic: binary.
With hex_output every binary value is a lowercase 0x string instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from pipeline.decode.abitypes import WIDE_BITS, AbiType
from pipeline.decode.ints import narrow_dtype
from pipeline.decode.signature import EventSpec, Param

META_COLUMNS = ("block_number", "block_timestamp", "transaction_index", "transaction_hash",
                "log_index", "address", "chain_id")  # fmt: skip
_HASHED_KINDS = ("string", "bytes", "array", "tuple")


@dataclass(frozen=True)
class ParamColumn:
    """Where one parameter goes: its column, and its float64 companion's (or None)."""

    param: Param
    name: str
    f64_name: str | None


def hashed(param: Param) -> bool:
    """Whether the parameter's topic is the keccak of its value (indexed dynamic or compound)."""
    return param.indexed and param.type.kind in _HASHED_KINDS


def param_columns(spec: EventSpec) -> list[ParamColumn]:
    """The parameter columns of a spec's table, in order."""
    taken = set(META_COLUMNS)
    columns = []
    for param in spec.params:
        name = _free(param.name, taken)
        f64_name = _free(f"{name}_f64", taken) if has_f64(param) else None
        columns.append(ParamColumn(param, name, f64_name))
    return columns


def has_f64(param: Param) -> bool:
    """Whether the parameter gets a `<name>_f64` companion column."""
    return param.type.wide and not hashed(param)


def arrow_type(kind: AbiType, hex_output: bool) -> pa.DataType:
    """The column type of a value of an ABI type (not an indexed hashed one)."""
    raw = pa.string() if hex_output else pa.binary()
    if kind.kind in ("uint", "int"):
        if kind.size > WIDE_BITS:
            return pa.string()
        return pa.from_numpy_dtype(narrow_dtype(kind.size, kind.kind == "int"))
    if kind.kind == "bool":
        return pa.bool_()
    if kind.kind == "string":
        return pa.string()
    if kind.kind == "array":
        return pa.list_(arrow_type(kind.item, hex_output))
    if kind.kind == "tuple":
        return pa.struct([(name, arrow_type(t, hex_output)) for name, t in kind.fields])
    return raw  # address, bytesN, bytes


def f64_type(kind: AbiType) -> pa.DataType:
    """The companion's type: float64 for each wide integer, lists and structs (of the fields
    that hold one) around it as in the value."""
    if kind.kind in ("uint", "int"):
        return pa.float64()
    if kind.kind == "array":
        return pa.list_(f64_type(kind.item))
    return pa.struct([(name, f64_type(t)) for name, t in kind.fields if t.wide])


def param_type(param: Param, hex_output: bool) -> pa.DataType:
    """The column type of a parameter: hashed topics are bytes."""
    if hashed(param):
        return pa.string() if hex_output else pa.binary()
    return arrow_type(param.type, hex_output)


def output_schema(
    spec: EventSpec, hex_output: bool, timestamp_type: pa.DataType | None = None
) -> pa.Schema:
    """The schema of a spec's decoded table; block_timestamp only when timestamp_type is given
    (the raw logs have it)."""
    raw = pa.string() if hex_output else pa.binary()
    fields = [("block_number", pa.uint64())]
    if timestamp_type is not None:
        fields.append(("block_timestamp", timestamp_type))
    fields += [("transaction_index", pa.uint32()), ("transaction_hash", raw),
               ("log_index", pa.uint32()), ("address", raw), ("chain_id", pa.uint64())]  # fmt: skip
    for column in param_columns(spec):
        fields.append((column.name, param_type(column.param, hex_output)))
        if column.f64_name:
            fields.append((column.f64_name, f64_type(column.param.type)))
    return pa.schema(fields)


def _free(name: str, taken: set[str]) -> str:
    while name in taken:
        name = f"event__{name}"
    taken.add(name)
    return name
