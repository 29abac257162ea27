"""The slower path, for data that holds dynamic types (string, bytes, dynamic arrays, tuples or
fixed arrays of them): eth_abi decodes each log's data (strict mode, its own checks of offsets,
lengths and padding), then the values become Arrow columns. Strings are read as bytes and
decoded here, so invalid UTF-8 is replaced (U+FFFD) and counted instead of failing the log.

eth_abi is imported on first use: it pulls in eth_utils, which takes about half a second.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.decode.abitypes import WIDE_BITS, AbiType
from pipeline.decode.schema import arrow_type, f64_type

REASON_CHARS = 160


@dataclass
class Rows:
    """What the data of m logs decoded to: a column (and float64 companion, or None) per
    parameter over the rows that decoded, which rows did (`ok`), why the others did not, and
    which rows held invalid UTF-8."""

    columns: list[pa.Array]
    f64: list[pa.Array | None]
    ok: np.ndarray
    reasons: dict[int, str] = field(default_factory=dict)
    invalid_utf8: np.ndarray | None = None


class _Utf8:
    """Decodes strings, remembering whether the current row had invalid UTF-8."""

    def __init__(self) -> None:
        self.invalid = False

    def __call__(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.invalid = True
            return raw.decode("utf-8", errors="replace")


def decode_rows(
    kinds: list[AbiType], data: list[bytes], hex_output: bool, max_reasons: int
) -> Rows:
    """Decode each data payload as the tuple of `kinds`; a payload eth_abi refuses is not ok
    (the first `max_reasons` of them get a reason)."""
    from eth_abi import decode  # costly (eth_utils): only for dynamic types
    from eth_abi.exceptions import DecodingError

    utf8 = _Utf8()
    converters = [_converter(k, hex_output, utf8) for k in kinds]
    f64_converters = [_f64_converter(k) if k.wide else None for k in kinds]
    types = [k.eth_abi_type() for k in kinds]
    ok = np.zeros(len(data), bool)
    invalid = np.zeros(len(data), bool)
    reasons: dict[int, str] = {}
    raw: list[tuple] = []  # eth_abi's values of the rows that decode
    converted: list[tuple] = []
    for row, payload in enumerate(data):
        try:
            values = decode(types, payload)
        except (DecodingError, ArithmeticError, ValueError, IndexError, MemoryError) as exc:
            if len(reasons) < max_reasons:
                reasons[row] = f"data: {type(exc).__name__}: {exc}"[:REASON_CHARS]
            continue
        ok[row] = True
        utf8.invalid = False
        raw.append(values)
        converted.append(tuple(c(v) for c, v in zip(converters, values, strict=True)))
        invalid[row] = utf8.invalid
    columns = [
        pa.array([values[i] for values in converted], arrow_type(k, hex_output))
        for i, k in enumerate(kinds)
    ]
    f64: list[pa.Array | None] = [None] * len(kinds)
    for i, (k, convert) in enumerate(zip(kinds, f64_converters, strict=True)):
        if convert is not None:
            f64[i] = pa.array([convert(values[i]) for values in raw], f64_type(k))
    return Rows(columns, f64, ok, reasons, invalid)


def _converter(kind: AbiType, hex_output: bool, utf8: _Utf8) -> Callable[[Any], Any]:
    """From eth_abi's value to what pa.array takes for arrow_type(kind)."""
    name = kind.kind
    if name == "address":  # eth_abi gives a lowercase 0x string
        return _same if hex_output else _address_bytes
    if name in ("bytes", "fixed_bytes"):
        return _hex if hex_output else _same
    if name == "string":
        return utf8
    if name in ("uint", "int"):
        return str if kind.size > WIDE_BITS else _same
    if name == "array":
        item = _converter(kind.item, hex_output, utf8)
        return lambda values: [item(v) for v in values]
    if name == "tuple":
        fields = [(n, _converter(t, hex_output, utf8)) for n, t in kind.fields]
        return lambda values: {n: c(v) for (n, c), v in zip(fields, values, strict=True)}
    return _same  # bool


def _f64_converter(kind: AbiType) -> Callable[[Any], Any]:
    """From eth_abi's value to what pa.array takes for f64_type(kind)."""
    if kind.kind in ("uint", "int"):
        return float
    if kind.kind == "array":
        item = _f64_converter(kind.item)
        return lambda values: [item(v) for v in values]
    fields = [(i, n, _f64_converter(t)) for i, (n, t) in enumerate(kind.fields) if t.wide]
    return lambda values: {n: c(values[i]) for i, n, c in fields}


def _same(value: Any) -> Any:
    return value


def _address_bytes(value: str) -> bytes:
    return bytes.fromhex(value[2:])


def _hex(value: bytes) -> str:
    return "0x" + value.hex()
