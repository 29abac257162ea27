"""Fault-injecting JSON-RPC proxy that makes a local node behave like a (bad) hosted provider.

Request path: parse the body -> plan (latency, fault) from the seeded RNG -> either build the
fault's outcome from the FAULTS table or forward the body verbatim to the upstream node.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import random
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import orjson

HOLD_SECONDS = 60.0  # a "timeout" fault holds this long (or until kill/stop): clients give up first
UPSTREAM_TIMEOUT = 30.0


@dataclass(frozen=True)
class Profile:
    """How one simulated provider behaves; every random choice comes from `seed`."""

    name: str = "healthy"
    latency_ms: tuple[float, float] = (0.0, 0.0)  # uniform extra delay per request, min..max
    failure_rate: float = 0.0  # probability that a request gets a fault
    failure_kinds: tuple[str, ...] = ("http_500", "http_503", "http_429", "drop")  # keys of FAULTS
    dead: bool = False  # from the start: connection refused
    die_after: int | None = None  # after this many requests the endpoint goes dead
    seed: int = 0


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("healthy"),
        Profile("fast", latency_ms=(1, 3)),
        Profile("medium", latency_ms=(15, 30)),
        Profile("slow", latency_ms=(60, 120)),
        Profile("flaky", latency_ms=(20, 60), failure_rate=0.3),
        Profile("slow-flaky", latency_ms=(80, 150), failure_rate=0.2),
        Profile("dead", dead=True),
        Profile("dies-mid-run", die_after=40),
    )
}


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


DROP = "drop"  # close the connection without any response
HOLD = "hold"  # send nothing until the proxy dies, then close
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


def _html(status: int, reason: str) -> Reply:
    # Shaped like the nginx/CDN error pages real providers return from their edge.
    title = f"{status} {reason}"
    page = f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
    page += "<hr><center>nginx</center></body></html>\n"
    return Reply(status, page.encode(), "text/html")


def _rpc_error(request: RpcRequest) -> Reply:
    error = {"code": -32000, "message": "internal error"}
    ids = [c.get("id") for c in request.calls] or [None]
    items = [{"jsonrpc": "2.0", "id": i, "error": error} for i in ids]
    return Reply(200, orjson.dumps(items if request.is_batch else items[0]), "application/json")


# Fault kind -> outcome. New provider behaviours (range caps, result caps, lagging head, truncated
# bodies) plug in here or next to it: each entry sees the parsed request.
FAULTS: dict[str, Callable[[RpcRequest], Outcome]] = {
    "http_500": lambda _: Reply(500, b"Internal Server Error"),
    "http_502": lambda _: _html(502, "Bad Gateway"),
    "http_503": lambda _: Reply(503, b"Service Unavailable"),
    "http_429": lambda _: Reply(429, b"Too Many Requests", headers={"Retry-After": "1"}),
    "http_429_html": lambda _: _html(429, "Too Many Requests"),
    "drop": lambda _: DROP,
    "timeout": lambda _: HOLD,
    "rpc_error": _rpc_error,
}


class FaultProxy:
    """A JSON-RPC proxy in front of `upstream` that misbehaves according to a Profile."""

    def __init__(
        self, upstream: str, profile: Profile = Profile(), host: str = "127.0.0.1", port: int = 0
    ) -> None:
        unknown = set(profile.failure_kinds) - FAULTS.keys()
        if unknown:
            raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
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
            }

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, request: RpcRequest, forward: Callable[[bytes], Reply]) -> Outcome:
        # Counted even when dead: tests and benchmarks want to see what hit a dead endpoint.
        with self._lock:
            self._requests += 1
            self._methods.update(request.methods)
            limit = self.profile.die_after
            # Beyond the limit is dead even before _after_request's kill() has closed the listener.
            over = limit is not None and self._requests > limit
            delay, kind = self._plan()
        # Latency waits on the death event so kill/stop never wait for a sleeping request.
        if over or self._dead.wait(delay):
            kind = "dead"  # counted under injected["dead"]
        if kind is not None:
            with self._lock:
                self._injected[kind] += 1
            return DROP if kind == "dead" else FAULTS[kind](request)
        reply = forward(request.body)
        with self._lock:
            self._forwarded += 1
        return reply

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
        self.wfile.write(reply.body)

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
    parser.add_argument("--upstream", required=True, help="JSON-RPC URL of the real node")
    parser.add_argument("--profile", default="healthy", choices=sorted(PROFILES))
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    args = parser.parse_args(argv)
    with FaultProxy(args.upstream, PROFILES[args.profile], port=args.port) as proxy:
        print(proxy.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
