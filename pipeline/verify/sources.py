"""The endpoints the verifier asks for headers, audits and receipts: one client per thread and
endpoint, paced within a share of the endpoint's --rps, resting after a failure (1 s, 2 s, 4 s
... 30 s) so that a failing endpoint is asked again only later."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from pipeline.config.endpoints import Endpoint
from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.ratecontrol import Throttle
from pipeline.fetch.rpc import RpcClient
from pipeline.fetch.timestamps import HeaderBatches

# What share of an endpoint's --rps the verifier may use (calls, a batch counting each call).
VERIFY_SHARE = 0.1
REST_S = (1.0, 2.0, 4.0, 8.0)
# Failures that say the endpoint is unwell (not that a request was too big or a block unknown).
ENDPOINT_FAULTS = frozenset(
    {ErrorKind.RATE_LIMITED, ErrorKind.QUOTA, ErrorKind.UNAUTHORIZED, ErrorKind.TIMEOUT,
     ErrorKind.CONNECTION, ErrorKind.SERVER, ErrorKind.MALFORMED}
)  # fmt: skip
HEADER_BATCH = 200  # header calls in one batch until the endpoint says otherwise

_Result = TypeVar("_Result")


class Source:
    """One endpoint as the verifier uses it."""

    def __init__(self, endpoint: Endpoint, timeout: float, on_request: Callable[[str], None]):
        self.endpoint = endpoint
        self.name = endpoint.name
        self.timeout = timeout
        self.throttle = Throttle(endpoint.rps * VERIFY_SHARE if endpoint.rps else None)
        self.batches = HeaderBatches(HEADER_BATCH)
        self.on_request = on_request
        self.failures = 0
        self.resting_until = 0.0
        self._local = threading.local()
        self._lock = threading.Lock()

    def resting(self) -> float:
        """Seconds until this endpoint may be asked again (0: now)."""
        with self._lock:
            return max(0.0, self.resting_until - time.monotonic())

    def ask(self, calls: int, request: Callable[[RpcClient], _Result]) -> _Result:
        """Run one request of `calls` JSON-RPC calls within the pacing; a failure makes the
        endpoint rest and is raised."""
        for _ in range(calls):
            time.sleep(self.throttle.reserve())
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = RpcClient(self.endpoint, self.timeout)
        self.on_request(self.name)
        try:
            result = request(client)
        except RpcError as err:
            if err.kind in ENDPOINT_FAULTS and "batch" not in err.message.lower():
                self.rest()
            raise
        with self._lock:
            self.failures = 0
        return result

    def rest(self) -> None:
        """Leave this endpoint alone for a while (longer after each failure in a row)."""
        with self._lock:
            pause = REST_S[min(self.failures, len(REST_S) - 1)]
            self.failures += 1
            self.resting_until = time.monotonic() + pause


class Sources:
    """Every endpoint of the run, for the verifier to pick from."""

    def __init__(
        self, endpoints: Iterable[Endpoint], timeout: float, on_request: Callable[[str], None]
    ) -> None:
        self.all = {e.name: Source(e, timeout, on_request) for e in endpoints}
        self.out: set[str] = set()

    def pick(self, avoid: Iterable[str], trusted: Callable[[str], bool]) -> Source | None:
        """The best endpoint not in `avoid`: trusted before suspect, awake before resting, then
        the one that rests least; None when every other endpoint is out."""
        avoid = set(avoid)
        usable = [s for s in self.all.values() if s.name not in avoid and s.name not in self.out]
        if not usable:
            return None
        return min(usable, key=lambda s: (not trusted(s.name), s.resting() > 0, s.resting()))

    def wait(self, source: Source) -> None:
        """Sleep out the source's rest."""
        time.sleep(source.resting())
