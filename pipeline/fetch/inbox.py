"""The receive buffer a client reuses from one eth_getLogs answer to the next.

A fresh buffer per answer (the chunks read, then their join) came from new pages every time:
glibc maps buffers over 1 MiB (run/lifecycle.py) and unmaps them when freed. The worker took a
page fault for every 4 KiB it read, ~290,000 per million logs, and about 0.5 CPU s of system
time. A buffer kept by the client is faulted in once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator

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


class InboxPool:
    """Receive buffers for one endpoint's threads, lent for a request at a time: as many are
    kept as requests were in flight at once, not one per thread. Its 8 threads each kept the
    largest answer it had read, though 1-3 were ever in flight (1M logs: the worker held
    136-157 MB at the tree's peak, 121 MB with the pool)."""

    def __init__(self) -> None:
        self._free: list[Inbox] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lent(self) -> Iterator[Inbox]:
        """An inbox for the duration of one request and the reading of its answer."""
        with self._lock:
            inbox = self._free.pop() if self._free else Inbox()
        try:
            yield inbox
        finally:
            with self._lock:
                self._free.append(inbox)  # last in, first out: the warm buffer goes out next
