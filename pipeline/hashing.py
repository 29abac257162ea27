"""Keccak-256 and the EIP-55 address checksum: shared by the options' checks and the decoders.

Both import their hash function on first use: eth_utils would cost half a second at start-up.
"""

from __future__ import annotations

try:
    from pipeline import _keccak  # the optional C extension (setup.py)
except ImportError:
    _keccak = None


def keccak256_each(items: list[bytes]) -> bytes:
    """The 32-byte Keccak-256 of each item, one after another: in one call of the C extension
    when the items are of one width (addresses, topics), else one at a time."""
    widths = {len(item) for item in items}
    if _keccak is not None and len(widths) == 1 and 0 not in widths:
        return _keccak.digests(b"".join(items), widths.pop())
    return b"".join(map(keccak256, items))


def keccak256(data: bytes) -> bytes:
    """Keccak-256 (Ethereum's, not SHA3-256), from the C extension where it is built, else from
    pycryptodome (web3 installs it): 25 ms to import where eth_hash.auto takes 45 and eth_utils
    500."""
    if _keccak is not None and data:
        return _keccak.digests(data, len(data))
    try:
        from Crypto.Hash import keccak  # only when a hash is needed
    except ImportError:
        from eth_hash.auto import keccak as eth_keccak

        return eth_keccak(data)
    return keccak.new(digest_bits=256, data=data).digest()


def is_checksum_address(address: str) -> bool:
    """True if a 0x + 40 hex digit address has EIP-55's letter case: a letter is upper-case
    exactly where the matching hex digit of keccak256(lower-case address) is 8 or more."""
    body = address[2:]
    digest = keccak256(body.lower().encode()).hex()
    expected = "".join(
        c.upper() if c.isalpha() and int(d, 16) >= 8 else c.lower()
        for c, d in zip(body, digest[: len(body)], strict=True)
    )
    return body == expected
