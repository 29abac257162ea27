"""The receive buffer a client reuses from one eth_getLogs answer to the next.

A fresh buffer per answer (the chunks read, then their join) came from new pages every time:
glibc maps buffers over 1 MiB (run/lifecycle.py) and unmaps them when freed. The worker took a
page fault for every 4 KiB it read, ~290,000 per million logs, and about 0.5 CPU s of system
time. A buffer kept by the client is faulted in once.
"""

from __future__ import annotations

from collections.abc import Iterable

# Capacity kept between answers. Sized tasks bring ~10,000 logs (1M logs from anvil: answers of
# 3 MB at the median, 10 MB at the 90th percentile, 30 MB where the density jumps); a bigger
# answer is read into a buffer of its own, freed with it.
KEEP_BYTES = 64 << 20


class Inbox:
    """One client's receive buffer (a client serves one thread at a time)."""

    def __init__(self, keep_bytes: int = KEEP_BYTES) -> None:
        self._keep = keep_bytes
        self._buffer = bytearray()

    def fill(self, chunks: Iterable[bytes], expected: int | None = None) -> memoryview:
        """The chunks, one after the other, as a read-only view valid until the next fill:
        `expected` (Content-Length) sizes the buffer up front."""
        buffer = self._buffer
        if expected is not None and len(buffer) < expected <= self._keep:
            buffer = bytearray(expected)  # not more: the header may lie
        size = 0
        for chunk in chunks:
            end = size + len(chunk)
            if end > len(buffer):
                # A new buffer, not a resize: a view of the last answer may still be alive.
                grown = bytearray(max(end, 2 * len(buffer)))
                grown[:size] = memoryview(buffer)[:size]
                buffer = grown
            buffer[size:end] = chunk
            size = end
        self._buffer = buffer if len(buffer) <= self._keep else bytearray()
        return memoryview(buffer)[:size].toreadonly()
