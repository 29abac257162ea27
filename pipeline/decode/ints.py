"""ABI words as integers, vectorised: padding checks, narrow ints, and integers wider than 64 bits
as exact decimal strings plus float64, with numpy over whole columns (no Python int per value).

A word is held as 4 native uint64 (most significant first). For a wide integer:
- sign: two's complement over 256 bits gives the magnitude of a negative value (a valid intN
  word is sign-extended to 256 bits, so this holds for every N);
- decimal: the magnitude as eight 32-bit limbs in uint64 columns; each pass divides the whole
  number by 10^9 limb by limb (remainder << 32 | limb stays below 2^62) and yields nine digits;
  passes stop when every limb of every row is zero, and limbs that are zero in every row are
  skipped. Chunks become ASCII through a 1000-entry table of three digits; leading zeros are
  dropped with one mask, and the digits of all rows, taken in row order, are the data buffer of
  the Arrow string array (offsets: cumulative lengths);
- float64: correctly rounded, as Python's float(int): the 64 bits from the top set bit, with a
  sticky bit for anything below them, converted by the hardware (one rounding), then scaled.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_BASE = np.uint64(10**8)
_TEN_THOUSAND = np.uint64(10**4)
_HALF = np.uint64(32)
_POWERS = np.array([10**k for k in range(1, 8)], np.uint64)
_LOW32 = np.uint64(0xFFFFFFFF)
_ONE = np.uint64(1)
_DIGITS4 = np.array(
    [int.from_bytes(f"{i:04d}".encode(), "little") for i in range(10**4)], np.uint64
)


def words(block: np.ndarray) -> np.ndarray:
    """(m, 32) uint8 big-endian words as (m, 4) native uint64, most significant first."""
    return np.ascontiguousarray(block).view(">u8").astype(np.uint64)


def _masks(low: int, high: int) -> list[tuple[int, np.uint64]]:
    """(word index, mask) of the bits low..high-1 (bit 0: the lowest bit of the word)."""
    masks = []
    for index in range(4):
        base = 64 * (3 - index)
        lo, hi = max(low, base), min(high, base + 64)
        if lo < hi:
            masks.append((index, np.uint64(((1 << (hi - lo)) - 1) << (lo - base))))
    return masks


def bits_zero(values: np.ndarray, low: int, high: int = 256) -> np.ndarray:
    """Rows whose bits low..high-1 are all zero."""
    ok = np.ones(len(values), bool)
    for index, mask in _masks(low, high):
        ok &= (values[:, index] & mask) == 0
    return ok


def sign_extended(values: np.ndarray, bits: int) -> np.ndarray:
    """Rows whose bits from bits-1 up are all 0 or all 1: a canonical intN word."""
    zeros = np.ones(len(values), bool)
    ones = np.ones(len(values), bool)
    for index, mask in _masks(bits - 1, 256):
        part = values[:, index] & mask
        zeros &= part == 0
        ones &= part == mask
    return zeros | ones


def narrow_dtype(bits: int, signed: bool) -> np.dtype:
    """The smallest numpy integer type of at least `bits` bits (bits <= 64)."""
    size = next(s for s in (8, 16, 32, 64) if s >= bits)
    return np.dtype(f"{'int' if signed else 'uint'}{size}")


def small_ints(values: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    """The value of each (canonical) intN/uintN word, N <= 64, in its narrow dtype."""
    low = values[:, 3]
    return (low.view(np.int64) if signed else low).astype(narrow_dtype(bits, signed))


def wide_ints(values: np.ndarray, signed: bool) -> tuple[pa.Array, np.ndarray]:
    """Each word as an exact decimal string and a float64 (int256 if signed, else uint256)."""
    negative = (
        (values[:, 0] >> np.uint64(63)).astype(bool) if signed else np.zeros(len(values), bool)
    )
    magnitude = _negate(values, negative) if negative.any() else values
    floats = _floats(magnitude)
    floats[negative] *= -1
    return _decimals(magnitude, negative), floats


def _negate(values: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Two's complement over 256 bits where `negative`: the magnitude of a negative value."""
    result = values.copy()
    carry = negative.astype(np.uint64)
    for index in (3, 2, 1, 0):
        flipped = np.where(negative, ~values[:, index], values[:, index])
        result[:, index] = flipped + carry
        carry = carry & (result[:, index] == 0)
    return result


def _floats(magnitude: np.ndarray) -> np.ndarray:
    """Correctly rounded float64 of each 256-bit magnitude."""
    rows = np.arange(len(magnitude))
    nonzero = magnitude != 0
    top = nonzero.argmax(axis=1)  # the first nonzero word (0 for a zero value: all words 0)
    padded = np.concatenate([magnitude, np.zeros((len(magnitude), 1), np.uint64)], axis=1)
    high, following = padded[rows, top], padded[rows, top + 1]
    below = (nonzero & (np.arange(4) > (top + 1)[:, None])).any(axis=1)
    shift = _leading_zeros(high)
    shift64 = shift.astype(np.uint64)
    carried = np.where(shift > 0, following >> (np.uint64(64) - shift64), 0)
    head = (high << shift64) | carried.astype(np.uint64)
    lost = (following << shift64) != 0  # bits of `following` that did not fit in the head
    head |= (lost | below).astype(np.uint64)  # sticky bit: rounds ties the right way
    return np.ldexp(head.astype(np.float64), (64 * (3 - top) - shift).astype(np.int32))


def _leading_zeros(values: np.ndarray) -> np.ndarray:
    """Leading zero bits of each uint64 (63 for 0: the caller's zero has no bits anyway)."""
    count = np.zeros(len(values), np.int64)
    current = values.copy()
    for step in (32, 16, 8, 4, 2, 1):
        small = current < np.uint64(1 << (64 - step))
        count += small * step
        current = np.where(small, current << np.uint64(step), current)
    return count


def _decimals(magnitude: np.ndarray, negative: np.ndarray) -> pa.Array:
    """Exact decimal strings of 256-bit magnitudes, with '-' where negative."""
    count = len(magnitude)
    limbs = np.empty((8, count), np.uint64)  # most significant first, one contiguous row each
    limbs[0::2] = (magnitude >> np.uint64(32)).T
    limbs[1::2] = (magnitude & _LOW32).T
    lead = _first_nonzero_limb(limbs, 0)
    chunks = []  # base-10^8 digits, least significant first
    while True:
        remainder = np.zeros(count, np.uint64)
        for index in range(lead, 8):
            current = (remainder << np.uint64(32)) | limbs[index]
            quotient = current // _BASE
            remainder = current - quotient * _BASE
            limbs[index] = quotient
        chunks.append(remainder)
        lead = _first_nonzero_limb(limbs, lead)
        if lead == 8:
            break
    return _ascii(chunks[::-1], negative)


def _first_nonzero_limb(limbs: np.ndarray, start: int) -> int:
    while start < 8 and not limbs[start].any():
        start += 1
    return start


def _ascii(chunks: list[np.ndarray], negative: np.ndarray) -> pa.Array:
    """A string array from base-10^8 digits, most significant first."""
    count, width = len(negative), len(chunks)
    # Eight ASCII digits per chunk, as one little-endian uint64 of two 4-digit table entries;
    # word 0 of each row is room for the '-' in front of the longest number.
    words = np.empty((count, width + 1), "<u8")
    high_word = words[:, 1:]
    for index, chunk in enumerate(chunks):
        high = chunk // _TEN_THOUSAND
        low = chunk - high * _TEN_THOUSAND
        high_word[:, index] = np.take(_DIGITS4, high) | (np.take(_DIGITS4, low) << _HALF)
    stacked = np.stack(chunks, axis=1)
    rows = np.arange(count)
    nonzero = stacked != 0
    top = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), width - 1)  # first nonzero chunk
    digits = 1 + (stacked[rows, top][:, None] >= _POWERS).sum(axis=1)
    first = 8 + 8 * top + 8 - digits  # byte of the first digit
    chars = words.view(np.uint8).reshape(count, 8 * (width + 1))
    chars[rows[negative], first[negative] - 1] = ord("-")
    start = first - negative
    # uint8 columns: the mask is built 16-32 bytes at a time (a row has at most 88 bytes)
    keep = np.arange(8 * (width + 1), dtype=np.uint8) >= start.astype(np.uint8)[:, None]
    offsets = np.zeros(count + 1, np.int64)
    np.cumsum(8 * (width + 1) - start, out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise OverflowError("too many digits for one string array; decode fewer rows at a time")
    return pa.Array.from_buffers(
        pa.string(),
        count,
        [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(chars[keep])],
    )
