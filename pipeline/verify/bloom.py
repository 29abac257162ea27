"""The logs bloom of a block header (Ethereum yellow paper, section 4.3.1): 2048 bits, and each
log's address and topics set three of them. A bloom never leaves out what its block holds."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from pipeline.hashing import keccak256, keccak256_each

BLOOM_BYTES = 256


def bloom_bits(item: bytes) -> tuple[int, int, int]:
    """The three bit positions `item` (an address or a topic, raw bytes) sets: the low 11 bits
    of the first three byte pairs of its keccak-256."""
    return tuple(_bits(keccak256(item))[0].tolist())  # type: ignore[return-value]


def bloom_positions_of(items: list[bytes]) -> np.ndarray:
    """Where each item's three bits are in a 256-byte bloom: (n, 3, 2) of (byte index, bit
    mask), the items hashed in one call."""
    bits = _bits(keccak256_each(items))
    # Bit 0 is the lowest bit of the bloom's last byte: the bloom is one big-endian number.
    return np.stack([BLOOM_BYTES - 1 - bits // 8, 1 << (bits % 8)], axis=-1)


@lru_cache(maxsize=1 << 16)  # addresses and topic0s recur in every answer: hashed once
def bloom_positions(item: bytes) -> tuple[tuple[int, int], ...]:
    """Where `item`'s three bits are in a 256-byte bloom: (byte index, bit mask) each."""
    return tuple(map(tuple, bloom_positions_of([item])[0].tolist()))


def _bits(digests: bytes) -> np.ndarray:
    """(n, 3): the bits each 32-byte digest sets."""
    pairs = np.frombuffer(digests, np.uint8).reshape(-1, 32)[:, :6].astype(np.int64)
    return ((pairs[:, 0::2] << 8) | pairs[:, 1::2]) & 2047


def may_contain(bloom: bytes, item: bytes) -> bool:
    """False only when the block certainly holds no log with this address or topic."""
    return all(bloom[byte] & mask for byte, mask in bloom_positions(item))


def may_match(bloom: bytes, addresses: Iterable[bytes], topics: Iterable[Iterable[bytes]]) -> bool:
    """Whether a block with this bloom may hold a log matching the filter: one of `addresses`
    (any when empty) and, per topic position, one of its values (any when empty)."""
    if len(bloom) != BLOOM_BYTES:
        return True  # no bloom to go by
    if not any(bloom):
        return False  # a block without a single log
    addresses = list(addresses)
    if addresses and not any(may_contain(bloom, a) for a in addresses):
        return False
    return all(not values or any(may_contain(bloom, v) for v in values) for values in topics)


def bloom_of(items: Iterable[bytes]) -> bytes:
    """The bloom of these addresses and topics (for tests and the simulator)."""
    value = bytearray(BLOOM_BYTES)
    for item in items:
        for byte, mask in bloom_positions(item):
            value[byte] |= mask
    return bytes(value)
