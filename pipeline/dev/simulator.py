"""Fault-injecting JSON-RPC proxy that makes a local node behave like a (bad) hosted provider.

Request path: parse the body -> plan (latency, fault) from the seeded RNG -> whole-request refusals
(unauthorized, quota, rate limit, then an injected fault from FAULTS) -> either forward the body
verbatim, or, when the profile caps, lags or prunes and the request holds calls that concern,
answer call by call: a batch is split, each call handled on its own, the array reassembled in order.
The providers' exact error shapes live in pipeline.dev.providers.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import random
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import orjson

# Profile and PROFILES are imported from here by the rest of the code.
from pipeline.dev.providers import (
    CAP_ERRORS,
    HINTS,
    LAG_MODES,
    PROFILES,
    PRUNED,
    QUOTAS,
    THROTTLES,
    UNAUTHORIZED,
    CapHit,
    Hint,
    Profile,
    Refusal,
    cap_builder,
    hint_range,
    html_refusal,
    infura_rate_limit,
    quicknode_range,
)

HOLD_SECONDS = 60.0  # a "timeout" fault holds this long (or until kill/stop): clients give up first
UPSTREAM_TIMEOUT = 30.0
HISTORY_LIMIT = 100_000  # stats() keeps this many get_logs records and request times (for tests)
HEAD_TAGS = frozenset({"latest", "pending", "safe", "finalized"})
_HEALTHY = Profile()


@dataclass(frozen=True)
class RpcRequest:
    """One HTTP request body and the JSON-RPC calls in it (empty if the body did not parse)."""

    body: bytes
    calls: tuple[dict[str, Any], ...] = ()
    is_batch: bool = False

    @property
    def methods(self) -> list[str]:
        """Method name of every call that has a string method."""
        return [c["method"] for c in self.calls if isinstance(c.get("method"), str)]


@dataclass(frozen=True)
class Reply:
    """A complete HTTP response to send back."""

    status: int
    body: bytes
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    trickle: bool = False  # send the body a byte every TRICKLE_INTERVAL_S


DROP = "drop"  # close the connection without any response
HOLD = "hold"  # send nothing until the proxy dies, then close
TRUNCATE = "truncate"  # forward, then send only the first half of the upstream body
TRICKLE = "trickle"  # forward, then send the body a byte at a time: every read is quick, the
# whole never ends (a per-read timeout alone never fires)
TRICKLE_INTERVAL_S = 0.5
Outcome = Reply | str


def parse_request(body: bytes) -> RpcRequest:
    """Parse just enough of a single or batch JSON-RPC body to see its calls."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return RpcRequest(body)
    items = payload if isinstance(payload, list) else [payload]
    calls = tuple(c for c in items if isinstance(c, dict))
    return RpcRequest(body, calls, isinstance(payload, list))


def as_reply(refusal: Refusal, request: RpcRequest) -> Reply:
    """The HTTP reply for a refusal of a whole request: its raw body, or its JSON-RPC error for
    every call (an array for a batch)."""
    headers = dict(refusal.headers)
    if refusal.error is None:
        return Reply(refusal.status, refusal.body, refusal.content_type, headers)
    ids = [c.get("id") for c in request.calls] or [None]
    items = [{"jsonrpc": "2.0", "id": i, "error": refusal.error} for i in ids]
    body = orjson.dumps(items if request.is_batch else items[0])
    return Reply(refusal.status, body, "application/json", headers)


def _refusal_fault(refusal: Refusal) -> Callable[[RpcRequest], Outcome]:
    return lambda request: as_reply(refusal, request)


# Fault kind -> outcome; each entry sees the parsed request. Profile caps, lag and throttling are
# not faults: they depend on each call's params and live in FaultProxy and pipeline.dev.providers.
FAULTS: dict[str, Callable[[RpcRequest], Outcome]] = {
    "http_500": lambda _: Reply(500, b"Internal Server Error"),
    "http_502": _refusal_fault(html_refusal(502, "Bad Gateway")),
    "http_503": lambda _: Reply(503, b"Service Unavailable"),
    "http_429": _refusal_fault(THROTTLES["retry-after"](0, 0)),
    "http_429_bare": _refusal_fault(THROTTLES["bare"](0, 0)),
    "http_429_html": _refusal_fault(THROTTLES["html"](0, 0)),
    "http_413_range": _refusal_fault(quicknode_range(CapHit(10_000, None))),
    "rpc_rate_limit": _refusal_fault(infura_rate_limit(13.333, 10.0)),
    "rpc_error": _refusal_fault(Refusal(200, {"code": -32000, "message": "internal error"})),
    "drop": lambda _: DROP,
    "timeout": lambda _: HOLD,
    "truncated": lambda _: TRUNCATE,
    "trickle": lambda _: TRICKLE,
}


class TokenBucket:
    """A rate limit: `rate` tokens a second, at most `burst` saved up; starts full."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def take(self, n: int = 1) -> bool:
        """Spend n tokens if at least one is left; False means throttled.

        A batch bigger than the burst may run the bucket into debt rather than never passing."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1 - 1e-9:  # float drift: 0.1 s at 10/s must still make a whole token
            return False
        self._tokens -= n
        return True


def check_profile(profile: Profile) -> None:
    """Raise ValueError for any field of the profile that names nothing or cannot work."""
    p = profile
    unknown = set(p.failure_kinds) - FAULTS.keys()
    if unknown:
        raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
    if p.dialect and p.dialect not in CAP_ERRORS:
        raise ValueError(f"unknown dialect {p.dialect!r}: choose from {sorted(CAP_ERRORS)}")
    choices = (("hint", HINTS), ("throttle", THROTTLES), ("lag_mode", LAG_MODES))
    for name, allowed in (*choices, ("quota_mode", QUOTAS)):
        if getattr(p, name) not in allowed:
            raise ValueError(f"unknown {name} {getattr(p, name)!r}: choose from {sorted(allowed)}")
    for kind, cap, least in (("range", p.range_cap, 1), ("result", p.result_cap, 0)):
        if cap is not None and cap < least:
            raise ValueError(f"{kind}_cap must be at least {least}, got {cap}")
        if cap is not None and cap_builder(p, kind) is None:
            raise ValueError(f"dialect {p.dialect!r} has no {kind}-cap error")
    if p.rps_cap is not None and p.rps_cap <= 0:
        raise ValueError(f"rps_cap must be positive, got {p.rps_cap}")
    if p.lag_blocks < 0:
        raise ValueError(f"lag_blocks must not be negative, got {p.lag_blocks}")


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
        rate = profile.rps_cap
        self._bucket = TokenBucket(rate, max(1.0, rate)) if rate else None  # burst: 1 s worth
        self._thread: threading.Thread | None = None
        self._server: _Server | None = None
        if profile.dead or profile.die_after == 0:
            self._dead.set()
            port = port or _free_port(host)  # nothing will listen here: connections are refused
        else:
            self._server = _Server((host, port), self)
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
        """A consistent snapshot of what the proxy has seen and done."""
        with self._lock:
            return {
                "requests": self._requests,
                "methods": dict(self._methods),
                "injected": dict(self._injected),
                "forwarded": self._forwarded,
                "get_logs": list(self._get_logs),  # (from, to, outcome) in arrival order
                "throttled": self._throttled,  # requests answered with a throttle
                "request_times": list(self._times),  # time.monotonic() of each request
            }

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
            self._methods.update(request.methods)
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
        return self.profile.lag_blocks > 0 and not methods.isdisjoint(_HEAD_METHODS)

    @property
    def _logs_rules(self) -> bool:
        p = self.profile
        caps = (p.range_cap, p.result_cap, p.pruned_below)
        return p.lag_blocks > 0 or any(c is not None for c in caps)

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
                self._record(*_literal_range(call), outcome)

    def _answer_calls(
        self, request: RpcRequest, forward: Callable[[bytes], Reply], throttled: list[bool]
    ) -> Reply:
        """Answer a single or batch request call by call, and reassemble the answer in order."""
        calls = _Calls(self, forward)
        flags = iter(throttled)
        payload = orjson.loads(request.body)  # it parsed once already: there are calls in it
        answers: list[_Answer] = []
        try:
            for item in payload if request.is_batch else [payload]:
                if isinstance(item, dict):
                    answers.append(calls.answer(item, next(flags, False)))
                else:
                    answers.append(_Answer(calls.post(item)))  # upstream says what is wrong
        except _UpstreamFailed as failed:
            return failed.reply
        finally:
            with self._lock:
                self._forwarded += int(calls.posted > 0)
                self._throttled += int(any(throttled))
        if not request.is_batch:
            return Reply(answers[0].status, orjson.dumps(answers[0].response), "application/json")
        # A batch keeps a per-call status (QuickNode's 413) only when every call shares it.
        statuses = {a.status for a in answers}
        status = statuses.pop() if len(statuses) == 1 else 200
        body = orjson.dumps([a.response for a in answers])
        return Reply(status, body, "application/json")

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


_HEAD_METHODS = frozenset({"eth_blockNumber", "eth_getBlockByNumber"})


@dataclass(frozen=True)
class _Answer:
    response: Any  # the JSON-RPC response object for one call
    status: int = 200


class _UpstreamFailed(Exception):
    """Upstream's answer to one call was no JSON-RPC answer: the request gets that reply as is."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class _Calls:
    """Answers the calls of one request one at a time, asking upstream as needed (the upstream
    head at most once per request)."""

    def __init__(self, proxy: FaultProxy, forward: Callable[[bytes], Reply]) -> None:
        self.proxy = proxy
        self.profile = proxy.profile
        self.posted = 0
        self._forward = forward
        self._upstream_head: int | None = None

    def answer(self, call: dict[str, Any], throttled: bool) -> _Answer:
        """This provider's answer to one call."""
        p, method = self.profile, call.get("method")
        if throttled:
            refusal = THROTTLES[p.throttle](*self.proxy._rates())
            return self._refuse(call, "throttled", refusal, *_literal_range(call))
        if method == "eth_getLogs" and self.proxy._logs_rules:
            return self._get_logs(call)
        if p.lag_blocks and method == "eth_blockNumber":
            return _Answer(_result(call, hex(self.head())))
        if p.lag_blocks and method == "eth_getBlockByNumber":
            return self._block(call)
        if method == "eth_getLogs":
            self.proxy._record(*_literal_range(call), "ok")
        return _Answer(self.post(call))

    def post(self, call: Any) -> dict[str, Any]:
        """Send one call upstream and return its JSON-RPC response object."""
        reply = self._forward(orjson.dumps(call))
        self.posted += 1
        try:
            response = orjson.loads(reply.body) if reply.status == 200 else None
        except orjson.JSONDecodeError:
            response = None
        if not isinstance(response, dict):
            raise _UpstreamFailed(reply)
        return response

    def head(self) -> int:
        """This node's head: upstream's, lag_blocks behind."""
        if self._upstream_head is None:
            response = self.post({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"})
            head = _quantity(response.get("result"))
            if head is None:
                raise _UpstreamFailed(Reply(502, b"upstream did not report its head"))
            self._upstream_head = head
        return max(0, self._upstream_head - self.profile.lag_blocks)

    def _refuse(
        self, call: dict[str, Any], outcome: str, refusal: Refusal, start: Any, end: Any
    ) -> _Answer:
        if call.get("method") == "eth_getLogs":
            self.proxy._record(start, end, outcome)
        response = {"jsonrpc": "2.0", "id": call.get("id"), "error": refusal.error}
        return _Answer(response, refusal.status)

    def _cap(self, kind: str, cap: int, hint: Hint | None) -> Refusal:
        p = self.profile
        builder = cap_builder(p, kind)
        if builder is None:  # check_profile refuses such a profile up front
            raise ValueError(f"dialect {p.dialect!r} has no {kind}-cap error")
        return builder(CapHit(cap, hint, p.range_cap, p.result_cap))

    def _resolve(self, value: Any) -> int | None:
        if value == "earliest":
            return 0
        # A tag means *this* node's head; "safe"/"finalized" are taken as the head too.
        return self.head() if value in HEAD_TAGS else _quantity(value)

    def _get_logs(self, call: dict[str, Any]) -> _Answer:
        p = self.profile
        query = _filter_of(call)
        start = end = None
        if query is not None and "blockHash" not in query:
            start = self._resolve(query.get("fromBlock", "latest"))
            end = self._resolve(query.get("toBlock", "latest"))
        if p.pruned_below is not None and start is not None and start < p.pruned_below:
            return self._refuse(call, "pruned", PRUNED, start, end)
        span = end - start + 1 if start is not None and end is not None else 0
        if p.range_cap is not None and start is not None and end is not None and span > p.range_cap:
            hint = hint_range(p.hint, start, end, start + p.range_cap - 1)
            refusal = self._cap("range", p.range_cap, hint)
            return self._refuse(call, "range_cap", refusal, start, end)
        sent = call
        if p.lag_blocks and query is not None and start is not None and end is not None:
            # Upstream would read a tag as its own head: send the numbers this node resolved.
            bounds = {"fromBlock": hex(start), "toBlock": hex(end)}
            sent = {**call, "params": [{**query, **bounds}, *call["params"][1:]]}
        try:
            response = self.post(sent)
        except _UpstreamFailed:
            self.proxy._record(start, end, "ok")
            raise
        logs = response.get("result")
        if not isinstance(logs, list):  # upstream's own error passes through
            self.proxy._record(start, end, "ok")
            return _Answer(response)
        kept = self._lagged(logs, end) if p.lag_blocks else logs
        if p.result_cap is not None and len(kept) > p.result_cap:
            refusal = self._result_refusal(kept, p.result_cap, start, end)
            return self._refuse(call, "result_cap", refusal, start, end)
        if len(kept) == len(logs):
            self.proxy._record(start, end, "ok")
            return _Answer(response)
        self.proxy._record(start, end, "lagged")
        return _Answer({**response, "result": kept})

    def _lagged(self, logs: list[Any], end: int | None) -> list[Any]:
        # No error, no hint: a lagging node simply has not seen those blocks yet.
        head = self.head()
        if self.profile.lag_mode == "empty" and end is not None:
            return [] if end > head else logs
        return [log for log in logs if _log_block(log) <= head]

    def _result_refusal(
        self, logs: list[Any], cap: int, start: int | None, end: int | None
    ) -> Refusal:
        blocks = sorted(_log_block(log) for log in logs)
        first = blocks[0] if start is None else start  # a blockHash query: its block from the logs
        last = blocks[-1] if end is None else end
        # The largest prefix that fits ends just before the block of the first log that does not;
        # a first block that alone holds too many logs still gets [first, first].
        # No clamp to range_cap: a range over it was refused before upstream was asked.
        fit = max(first, blocks[cap] - 1)
        return self._cap("result", cap, hint_range(self.profile.hint, first, last, fit))

    def _block(self, call: dict[str, Any]) -> _Answer:
        params = call.get("params")
        if not isinstance(params, list) or not params:
            return _Answer(self.post(call))
        tag, head = params[0], self.head()
        if tag in ("latest", "pending"):
            return _Answer(self.post(_with_block(call, head)))
        if tag in ("safe", "finalized"):
            response = self.post(call)
            block = response.get("result")
            number = _quantity(block.get("number")) if isinstance(block, dict) else None
            if number is not None and number > head:
                response = self.post(_with_block(call, head))
            return _Answer(response)
        number = _quantity(tag)
        if number is not None and number > head:
            return _Answer(_result(call, None))  # what any node says of a block it has not seen
        return _Answer(self.post(call))


def _quantity(value: Any) -> int | None:
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        with contextlib.suppress(ValueError):
            return int(value, 16)
    return None


def _filter_of(call: dict[str, Any]) -> dict[str, Any] | None:
    params = call.get("params")
    if isinstance(params, list) and params and isinstance(params[0], dict):
        return params[0]
    return None


def _literal_range(call: dict[str, Any]) -> tuple[int | None, int | None]:
    """eth_getLogs bounds as written (None for tags): for calls the proxy never resolved."""
    query = _filter_of(call) or {}
    return _quantity(query.get("fromBlock")), _quantity(query.get("toBlock"))


def _log_block(log: Any) -> int:
    number = _quantity(log.get("blockNumber")) if isinstance(log, dict) else None
    return -1 if number is None else number  # a pending log: before any head


def _with_block(call: dict[str, Any], number: int) -> dict[str, Any]:
    return {**call, "params": [hex(number), *call["params"][1:]]}


def _result(call: dict[str, Any], result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call.get("id"), "result": result}


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Cut connections and vanished clients are the point of this server, not errors.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no delayed-ACK stall
    server: _Server
    _upstream: http.client.HTTPConnection | None = None

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.proxy._track(self.connection, add=False)
        self._close_upstream()
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        if "Content-Length" not in self.headers:
            self.send_error(411)  # no chunked bodies: JSON-RPC clients always send a length
            return
        body = self.rfile.read(int(self.headers["Content-Length"]))
        proxy = self.server.proxy
        outcome = proxy._handle(parse_request(body), self._forward)
        if isinstance(outcome, Reply):
            self._send(outcome)
        else:
            if outcome == HOLD:
                proxy._dead.wait(HOLD_SECONDS)
            self.close_connection = True
        proxy._after_request()

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not reply.trickle:
            self.wfile.write(reply.body)
            return
        for i in range(len(reply.body)):
            if self.server.proxy._dead.wait(TRICKLE_INTERVAL_S):
                break
            self.wfile.write(reply.body[i : i + 1])
            self.wfile.flush()

    def _forward(self, body: bytes) -> Reply:
        for _ in range(2):  # a kept-alive upstream connection may have gone stale: retry once
            try:
                return self._post_upstream(body)
            except (OSError, http.client.HTTPException):
                self._close_upstream()
        return Reply(502, b"upstream unavailable")

    def _post_upstream(self, body: bytes) -> Reply:
        host, port, path = self.server.proxy.upstream
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT)
        self._upstream.request("POST", path, body, {"Content-Type": "application/json"})
        resp = self._upstream.getresponse()
        data = resp.read()
        return Reply(resp.status, data, resp.getheader("Content-Type", "application/json"))

    def _close_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None


def main(argv: list[str] | None = None) -> None:
    """Run one proxy in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Fault-injecting JSON-RPC proxy.")
    parser.add_argument("--upstream", help="JSON-RPC URL of the real node")
    parser.add_argument("--profile", default="healthy", choices=sorted(PROFILES))
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--list", action="store_true", help="list the profiles and exit")
    args = parser.parse_args(argv)
    if args.list:
        width = max(map(len, PROFILES))
        for name, profile in PROFILES.items():
            print(f"{name:<{width}}  {profile.description}")
        return
    if not args.upstream:
        parser.error("--upstream is required")
    with FaultProxy(args.upstream, PROFILES[args.profile], port=args.port) as proxy:
        print(proxy.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
