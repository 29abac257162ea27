"""Byte columns between Arrow and numpy, without a Python object per value: fixed-width rows out
of a binary array, binary or 0x-hex arrays out of rows, and 0x-hex strings back to bytes."""

from __future__ import annotations

import binascii

import numpy as np
import pyarrow as pa

_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
_NIBBLES = np.full(256, 255, np.uint8)  # hex digit -> its value; 255: not a hex digit
for _digit, _char in enumerate(b"0123456789abcdef"):
    _NIBBLES[_char] = _NIBBLES[ord(chr(_char).upper())] = _digit


def value_bounds(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each value of a binary/string array, within data_buffer(array)."""
    offsets = np.frombuffer(array.buffers()[1], np.int32, len(array) + 1, array.offset * 4)
    starts = offsets[:-1].astype(np.int64)
    return starts, (offsets[1:] - offsets[:-1]).astype(np.int64)


def data_buffer(array: pa.Array) -> np.ndarray:
    """The value bytes of a binary/string array (empty when it has none)."""
    buffer = array.buffers()[2]
    return np.frombuffer(buffer, np.uint8) if buffer is not None else np.empty(0, np.uint8)


def fixed_rows(array: pa.Array, rows: np.ndarray, width: int) -> np.ndarray:
    """The first `width` bytes of the values at `rows`, as a (len(rows), width) uint8 array;
    each of those values must have at least `width` bytes."""
    if width == 0 or len(rows) == 0:
        return np.zeros((len(rows), width), np.uint8)
    data = data_buffer(array)
    starts = value_bounds(array)[0][rows]
    # Each value seen as one `width`-byte item starting at any byte: one memcpy per row.
    items = np.ndarray((len(data) - width + 1,), f"V{width}", data, 0, (1,))
    return items[starts].view(np.uint8).reshape(len(rows), width)


def hex_rows(array: pa.Array, rows: np.ndarray, width: int) -> np.ndarray:
    """fixed_rows of a string array of 0x hex: the first `width` bytes the values at `rows`
    spell (each at least 2 + 2 * width characters long); ValueError if one is not hex."""
    chars = fixed_rows(array, rows, 2 + 2 * width)
    if not np.all((chars[:, 0] == ord("0")) & ((chars[:, 1] | 0x20) == ord("x"))):
        raise ValueError("a value does not start with 0x")
    nibbles = np.take(_NIBBLES, chars[:, 2:])
    if np.any(nibbles == 255):
        raise ValueError("a value is not hex")
    return (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]


def binary_from_rows(rows: np.ndarray) -> pa.Array:
    """A binary array with one value per row of a 2-D uint8 array."""
    count, width = rows.shape
    offsets = np.arange(count + 1, dtype=np.int32) * width
    data = np.ascontiguousarray(rows)
    return pa.Array.from_buffers(
        pa.binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def hex_from_rows(rows: np.ndarray) -> pa.Array:
    """A string array of lowercase 0x hex, one value per row of a 2-D uint8 array."""
    count, width = rows.shape
    chars = np.empty((count, 2 + 2 * width), np.uint8)
    chars[:, 0], chars[:, 1] = ord("0"), ord("x")
    chars[:, 2::2] = _HEX_DIGITS[rows >> 4]
    chars[:, 3::2] = _HEX_DIGITS[rows & 15]
    offsets = np.arange(count + 1, dtype=np.int32) * (2 + 2 * width)
    return pa.Array.from_buffers(
        pa.string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(chars)]
    )


def bytes_column(rows: np.ndarray, hex_output: bool) -> pa.Array:
    """Rows of bytes as binary, or as 0x strings with hex_output."""
    return hex_from_rows(rows) if hex_output else binary_from_rows(rows)


def unhex(array: pa.Array) -> pa.Array:
    """A string array of 0x hex, without nulls, as the binary array of its bytes; ValueError if a
    value is not 0x and a whole number of bytes of hex."""
    if array.null_count:
        raise ValueError("a null among hex values")
    starts, lengths = value_bounds(array)
    if len(array) == 0:
        return pa.array([], pa.binary())
    data = data_buffer(array)
    prefixes = data[starts] if np.all(lengths >= 2) else None
    if prefixes is None or not (
        np.all(prefixes == ord("0")) and np.all((data[starts + 1] | 0x20) == ord("x"))
    ):
        raise ValueError("a value does not start with 0x")
    if np.any(lengths % 2):
        raise ValueError("a value is not a whole number of bytes of hex")
    keep = np.zeros(len(data), bool)
    keep[int(starts[0]) : int(starts[-1] + lengths[-1])] = True
    keep[starts], keep[starts + 1] = False, False
    try:
        raw = binascii.unhexlify(data[keep].tobytes())
    except binascii.Error as exc:
        raise ValueError(f"not hex: {exc}") from None
    offsets = np.zeros(len(array) + 1, np.int32)
    np.cumsum((lengths - 2) // 2, out=offsets[1:])
    return pa.Array.from_buffers(
        pa.binary(), len(array), [None, pa.py_buffer(offsets), pa.py_buffer(raw)]
    )


def to_hex(array: pa.Array) -> pa.Array:
    """A binary array, without nulls, as lowercase 0x strings."""
    if array.null_count:
        raise ValueError("a null among byte values")
    starts, lengths = value_bounds(array)
    count = len(array)
    if count == 0:
        return pa.array([], pa.string())
    first = int(starts[0])
    data = data_buffer(array)[first : int(starts[-1] + lengths[-1])]
    out_lengths = 2 + 2 * lengths
    offsets = np.zeros(count + 1, np.int64)
    np.cumsum(out_lengths, out=offsets[1:])
    chars = np.empty(int(offsets[-1]), np.uint8)
    chars[offsets[:-1]], chars[offsets[:-1] + 1] = ord("0"), ord("x")
    # Byte j of the data (all values in a row) lands after the j bytes and i+1 prefixes before it.
    owner = np.repeat(np.arange(count), lengths)
    places = 2 * (owner + 1) + 2 * np.arange(len(data))
    chars[places], chars[places + 1] = _HEX_DIGITS[data >> 4], _HEX_DIGITS[data & 15]
    return pa.Array.from_buffers(
        pa.string(), count, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(chars)]
    )
