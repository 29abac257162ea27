"""FaultProxy: the request path (plan the latency and fault from the seeded RNG, whole-request
refusals, injected faults, then forward verbatim or answer call by call) and its counters."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import urlsplit

import orjson

from pipeline.dev.providers import (
    METHOD_NOT_FOUND,
    QUOTAS,
    THROTTLES,
    UNAUTHORIZED,
    Profile,
    Refusal,
    batch_refusal,
)
from pipeline.dev.simulator.calls import HEAD_METHODS, Calls, ProxyHooks, answer_request
from pipeline.dev.simulator.faults import FAULTS, TokenBucket, check_profile
from pipeline.dev.simulator.hostile import HostileAnswers
from pipeline.dev.simulator.liars import BLOCK_METHODS, Liars
from pipeline.dev.simulator.server import Server, free_port
from pipeline.dev.simulator.stamps import BlockTimestamps
from pipeline.dev.simulator.wire import (
    DROP,
    TRICKLE,
    TRUNCATE,
    Outcome,
    Reply,
    RpcRequest,
    as_reply,
    literal_range,
    quantity,
)

HISTORY_LIMIT = 100_000  # stats() keeps this many get_logs records and request times (for tests)
_HEALTHY = Profile()


class FaultProxy:
    """A JSON-RPC proxy in front of `upstream` that misbehaves according to a Profile."""

    def __init__(
        self, upstream: str, profile: Profile = _HEALTHY, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        check_profile(profile)
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80, parts.path or "/")
        self.profile = profile
        self._rng = random.Random(profile.seed)
        self._lock = threading.Lock()
        self._dead = threading.Event()
        self._conns: set[socket.socket] = set()
        self._requests = 0
        self._forwarded = 0
        self._methods: Counter[str] = Counter()
        self._injected: Counter[str] = Counter()
        self._throttled = 0
        self._get_logs: deque[tuple[int | None, int | None, str]] = deque(maxlen=HISTORY_LIMIT)
        self._times: deque[float] = deque(maxlen=HISTORY_LIMIT)
        self._kinds: deque[str] = deque(maxlen=HISTORY_LIMIT)  # each request's first method
        rate = profile.rps_cap
        self._bucket = TokenBucket(rate, max(1.0, rate)) if rate else None  # burst: 1 s worth
        # Its own seeded draws: the fault and latency sequence stays what it was without it.
        self._hostile = HostileAnswers(profile.hostile_rate, profile.hostile_kinds, profile.seed)
        self._stamps = BlockTimestamps(
            profile.strip_block_timestamp, profile.fake_block_timestamp, profile.seed
        )
        self._liars = Liars(profile)
        self._header_blocks: Counter[int] = Counter()  # eth_getBlockByNumber calls, by block
        self._refused_batches = 0
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        if profile.dead or profile.die_after == 0:
            self._dead.set()
            port = port or free_port(host)  # nothing will listen here: connections are refused
        else:
            self._server = Server((host, port), self)
            port = self._server.server_address[1]
        self.url = f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        """Serve in a daemon thread (a no-op for a dead proxy); returns self."""
        if self._server is not None and self._thread is None and not self._dead.is_set():
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True
            )
            self._thread.start()
        return self

    def kill(self) -> None:
        """Go dead now: refuse new connections and cut every open one."""
        with self._lock:
            if self._dead.is_set() and self._server is None:
                return
            self._dead.set()
            server, self._server = self._server, None
        if server is not None:
            if self._thread is not None:
                server.shutdown()
            server.server_close()
        self._cut_connections()

    def stop(self) -> None:
        """Shut down for good; idempotent."""
        self.kill()
        self._cut_connections()  # also catches connections accepted while a kill was under way
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)

    def stats(self) -> dict:
        """A consistent snapshot of what the proxy has seen and done; with a hostile profile
        also "hostile": how many eth_getLogs answers it spoiled, by kind; with a profile that
        strips or fakes blockTimestamp or limits batches, "block_timestamps" (logs stripped,
        faked, zeroed), "header_blocks" (eth_getBlockByNumber calls by block number) and
        "refused_batches"; always "lies": eth_getLogs answers (and, for "behind", headers or
        receipts) a liar spoiled, by kind."""
        with self._lock:
            stats = {
                "requests": self._requests,
                "methods": dict(self._methods),
                "injected": dict(self._injected),
                "forwarded": self._forwarded,
                "get_logs": list(self._get_logs),  # (from, to, outcome) in arrival order
                "throttled": self._throttled,  # requests answered with a throttle
                "request_times": list(self._times),  # time.monotonic() of each request
                "request_methods": list(self._kinds),  # the first method each one calls
                "lies": self._liars.counts(),
            }
            if self.profile.hostile_rate:
                stats["hostile"] = self._hostile.served()
            if self._counts_headers:
                stats["block_timestamps"] = self._stamps.counts()
                stats["header_blocks"] = dict(self._header_blocks)
                stats["refused_batches"] = self._refused_batches
            return stats

    @property
    def _counts_headers(self) -> bool:
        return self._stamps.active or self.profile.batch_limit is not None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, request: RpcRequest, forward: Callable[[bytes], Reply]) -> Outcome:
        # Counted even when dead: tests and benchmarks want to see what hit a dead endpoint.
        with self._lock:
            self._requests += 1
            number = self._requests
            self._times.append(time.monotonic())
            self._kinds.append(next(iter(request.methods), ""))
            self._methods.update(request.methods)
            if self._counts_headers:
                self._header_blocks.update(_header_blocks(request))
            limit = self.profile.die_after
            # Beyond the limit is dead even before _after_request's kill() has closed the listener.
            over = limit is not None and self._requests > limit
            delay, kind = self._plan()
        # Latency waits on the death event so kill/stop never wait for a sleeping request.
        if over or self._dead.wait(delay):
            kind = "dead"  # counted under injected["dead"]
        p = self.profile
        if kind == "dead":
            return self._inject(request, kind, forward)
        # The provider's edge answers these before any backend (or injected backend fault) runs.
        if p.unauthorized:
            return self._refuse(request, "unauthorized", UNAUTHORIZED)
        if p.quota_after is not None and number > p.quota_after:
            return self._refuse(request, "quota", QUOTAS[p.quota_mode])
        throttled = self._throttle(len(request.calls))
        if any(throttled) and (p.throttle != "infura" or all(throttled)):
            with self._lock:
                self._throttled += 1
            return self._refuse(request, "throttled", THROTTLES[p.throttle](*self._rates()))
        if p.batch_limit is not None and request.is_batch and len(request.calls) > p.batch_limit:
            with self._lock:
                self._refused_batches += 1
            return self._refuse_batch(request, p.batch_limit)
        if not set(request.methods).isdisjoint(p.missing_methods):
            return self._refuse(request, "missing", METHOD_NOT_FOUND)
        if kind is not None:
            return self._inject(request, kind, forward)
        if any(throttled) or self._per_call(request):
            return self._answer_calls(request, forward, throttled)
        self._record_calls(request, "ok")
        return self._forward_counted(forward, request.body)

    def _per_call(self, request: RpcRequest) -> bool:
        # Only these need each call's params; everything else is forwarded as the bytes it came in.
        methods = set(request.methods)
        if self._logs_rules and "eth_getLogs" in methods:
            return True
        if self._liars.behind and not methods.isdisjoint(BLOCK_METHODS):
            return True
        return self.profile.lag_blocks > 0 and not methods.isdisjoint(HEAD_METHODS)

    @property
    def _logs_rules(self) -> bool:
        p = self.profile
        caps = (p.range_cap, p.result_cap, p.pruned_below)
        rewrites = p.lag_blocks > 0 or p.hostile_rate > 0 or self._stamps.active
        rewrites = rewrites or self._liars.active
        return rewrites or any(c is not None for c in caps)

    def _inject(self, request: RpcRequest, kind: str, forward: Callable[[bytes], Reply]) -> Outcome:
        with self._lock:
            self._injected[kind] += 1
        self._record_calls(request, kind)
        outcome = DROP if kind == "dead" else FAULTS[kind](request)
        if outcome not in (TRUNCATE, TRICKLE):
            return outcome
        reply = self._forward_counted(forward, request.body)
        if outcome == TRICKLE:
            return replace(reply, trickle=True)
        # A complete HTTP response whose JSON stops halfway: Content-Length matches the half.
        return Reply(reply.status, reply.body[: len(reply.body) // 2], reply.content_type)

    def _refuse_batch(self, request: RpcRequest, limit: int) -> Reply:
        refusal = batch_refusal(limit)
        if limit:
            return self._refuse(request, "batch", refusal)
        # No batches at all: one error object answers the whole request.
        self._record_calls(request, "batch")
        body = orjson.dumps({"jsonrpc": "2.0", "id": None, "error": refusal.error})
        return Reply(refusal.status, body, "application/json")

    def _refuse(self, request: RpcRequest, outcome: str, refusal: Refusal) -> Reply:
        self._record_calls(request, outcome)
        return as_reply(refusal, request)

    def _forward_counted(self, forward: Callable[[bytes], Reply], body: bytes) -> Reply:
        reply = forward(body)
        with self._lock:
            self._forwarded += 1
        return reply

    def _throttle(self, calls: int) -> list[bool]:
        """Per call of the request: is it over the rate limit? Empty when there is no limit."""
        if self._bucket is None:
            return []
        calls = max(1, calls)  # an unparsable body still costs a request
        with self._lock:
            if self.profile.throttle == "infura":  # Infura throttles calls of a batch one by one
                return [not self._bucket.take() for _ in range(calls)]
            return [not self._bucket.take(calls)] * calls

    def _rates(self) -> tuple[float, float]:
        """(requests seen in the last second, the allowed rate), as a throttle reports them."""
        with self._lock:
            now = time.monotonic()
            recent = 0
            for stamp in reversed(self._times):
                if now - stamp > 1.0:
                    break
                recent += 1
        return float(recent), float(self.profile.rps_cap or 0)

    def _record(self, start: int | None, end: int | None, outcome: str) -> None:
        with self._lock:
            self._get_logs.append((start, end, outcome))

    def _record_calls(self, request: RpcRequest, outcome: str) -> None:
        for call in request.calls:
            if call.get("method") == "eth_getLogs":
                self._record(*literal_range(call), outcome)

    def _answer_calls(
        self, request: RpcRequest, forward: Callable[[bytes], Reply], throttled: list[bool]
    ) -> Reply:
        """Answer a single or batch request call by call (see calls.answer_request)."""
        hooks = ProxyHooks(
            self.profile,
            self._logs_rules,
            self._record,
            self._rates,
            self._hostile.spoil,
            self._stamps.rewrite,
            self._liars,
        )
        calls = Calls(hooks, forward, request.is_batch)
        try:
            return answer_request(calls, request, throttled)
        finally:
            with self._lock:
                self._forwarded += int(calls.posted > 0)
                self._throttled += int(any(throttled))

    def _after_request(self) -> None:
        limit = self.profile.die_after
        with self._lock:
            due = limit is not None and self._requests >= limit
        if due:
            self.kill()

    def _plan(self) -> tuple[float, str | None]:
        # Always draw both numbers so the fault sequence does not depend on the latency settings.
        p = self.profile
        delay = self._rng.uniform(*p.latency_ms) / 1000.0
        hit = self._rng.random() < p.failure_rate
        kind = self._rng.choice(p.failure_kinds) if hit and p.failure_kinds else None
        return delay, kind

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _cut_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            # shutdown (not close) wakes the handler thread, which then closes its own socket.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def _header_blocks(request: RpcRequest) -> list[int]:
    """The block numbers the request's eth_getBlockByNumber calls ask for (tags left out)."""
    numbers = []
    for call in request.calls:
        params = call.get("params")
        if call.get("method") == "eth_getBlockByNumber" and isinstance(params, list) and params:
            number = quantity(params[0])
            if number is not None:
                numbers.append(number)
    return numbers
