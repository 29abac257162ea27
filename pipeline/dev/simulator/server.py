"""The HTTP side of the proxy: a threading server whose handler reads a request, asks the proxy
for the outcome, and sends it (whole, a byte at a time, or not at all); upstream calls go over
a kept-alive connection per client connection."""

from __future__ import annotations

import http.client
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from pipeline.dev.simulator.wire import (
    HOLD,
    TRICKLE_INTERVAL_S,
    Outcome,
    Reply,
    RpcRequest,
    parse_request,
)

HOLD_SECONDS = 60.0  # a "timeout" fault holds this long (or until kill/stop): clients give up first
UPSTREAM_TIMEOUT = 30.0


class Proxy(Protocol):
    """What the handler needs from the proxy (FaultProxy; passed in, never imported here)."""

    upstream: tuple[str, int, str]  # host, port, path
    _dead: threading.Event

    def _handle(self, request: RpcRequest, forward: Callable[[bytes], Reply]) -> Outcome: ...

    def _track(self, conn: socket.socket, add: bool) -> None: ...

    def _after_request(self) -> None: ...


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], proxy: Proxy) -> None:
        self.proxy = proxy
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Cut connections and vanished clients are the point of this server, not errors.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no delayed-ACK stall
    server: Server
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
