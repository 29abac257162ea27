"""Tests for the fault-injecting proxy, against a tiny in-process JSON-RPC stub."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from pipeline.simulator import FAULTS, PROFILES, FaultProxy, Profile, parse_request

ROOT = Path(__file__).resolve().parents[1]
RESULTS = {"eth_chainId": "0x7a69", "eth_blockNumber": "0x10"}


def _answer(call: Any) -> dict:
    result = RESULTS.get(call.get("method"), call.get("method"))
    return {"jsonrpc": "2.0", "id": call.get("id"), "result": result}


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            payload = json.loads(body)
        except ValueError:
            error = {"code": -32700, "message": "parse error"}
            reply: Any = {"jsonrpc": "2.0", "id": None, "error": error}
        else:
            reply = [_answer(c) for c in payload] if isinstance(payload, list) else _answer(payload)
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def make_proxy(upstream: str) -> Iterator[Callable[..., FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(**profile: Any) -> FaultProxy:
        proxy = FaultProxy(upstream, Profile(**profile)).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


def rpc(method: str, id_: int = 1) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": []}


def test_forwards_single_request_and_counts(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy()
    resp = requests.post(proxy.url, json=rpc("eth_chainId", 7), timeout=2)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json() == {"jsonrpc": "2.0", "id": 7, "result": "0x7a69"}
    assert proxy.stats() == {
        "requests": 1,
        "methods": {"eth_chainId": 1},
        "injected": {},
        "forwarded": 1,
    }


def test_forwards_batch_over_keep_alive(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy()
    batch = [rpc("eth_chainId", 1), rpc("eth_blockNumber", 2), rpc("eth_blockNumber", 3)]
    with requests.Session() as session:
        for _ in range(3):
            resp = session.post(proxy.url, json=batch, timeout=2)
            assert [r["id"] for r in resp.json()] == [1, 2, 3]
            assert [r["result"] for r in resp.json()] == ["0x7a69", "0x10", "0x10"]
    stats = proxy.stats()
    assert stats["requests"] == 3 and stats["forwarded"] == 3
    assert stats["methods"] == {"eth_chainId": 3, "eth_blockNumber": 6}


def test_unparsable_body_is_forwarded(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy()
    resp = requests.post(proxy.url, data=b"{not json", timeout=2)
    assert resp.json()["error"]["code"] == -32700
    assert proxy.stats()["requests"] == 1 and proxy.stats()["methods"] == {}


def test_parse_request() -> None:
    assert parse_request(b'[1, {"method": "a"}]').methods == ["a"]
    assert parse_request(b"garbage").calls == ()
    assert parse_request(b'{"method": "b", "id": 3}').is_batch is False


def test_latency_within_range(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy(latency_ms=(40.0, 60.0))
    with requests.Session() as session:
        for _ in range(4):
            start = time.monotonic()
            session.post(proxy.url, json=rpc("eth_chainId"), timeout=2).raise_for_status()
            assert 0.035 <= time.monotonic() - start < 0.5


@pytest.mark.parametrize(
    ("kind", "status", "content_type"),
    [
        ("http_500", 500, "text/plain"),
        ("http_502", 502, "text/html"),
        ("http_503", 503, "text/plain"),
        ("http_429", 429, "text/plain"),
        ("http_429_html", 429, "text/html"),
    ],
)
def test_http_faults(
    make_proxy: Callable[..., FaultProxy], kind: str, status: int, content_type: str
) -> None:
    proxy = make_proxy(failure_rate=1.0, failure_kinds=(kind,))
    with requests.Session() as session:  # a fault keeps the connection usable
        for _ in range(2):
            resp = session.post(proxy.url, json=rpc("eth_getLogs"), timeout=2)
            assert resp.status_code == status
            assert resp.headers["Content-Type"] == content_type
            assert resp.headers.get("Retry-After") == ("1" if kind == "http_429" else None)
    assert proxy.stats()["injected"] == {kind: 2}
    assert proxy.stats()["forwarded"] == 0


def test_rpc_error_single_and_batch(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy(failure_rate=1.0, failure_kinds=("rpc_error",))
    resp = requests.post(proxy.url, json=rpc("eth_getLogs", 42), timeout=2)
    assert resp.status_code == 200
    assert resp.json() == {
        "jsonrpc": "2.0",
        "id": 42,
        "error": {"code": -32000, "message": "internal error"},
    }
    batch = requests.post(proxy.url, json=[rpc("a", 1), rpc("b", 2)], timeout=2).json()
    assert [(r["id"], r["error"]["code"]) for r in batch] == [(1, -32000), (2, -32000)]


def test_drop_closes_without_response(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy(failure_rate=1.0, failure_kinds=("drop",))
    with pytest.raises(requests.ConnectionError):
        requests.post(proxy.url, json=rpc("eth_getLogs"), timeout=2)
    assert proxy.stats()["injected"] == {"drop": 1}


def test_timeout_holds_until_client_gives_up(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy(failure_rate=1.0, failure_kinds=("timeout",))
    with pytest.raises(requests.ReadTimeout):
        requests.post(proxy.url, json=rpc("eth_getLogs"), timeout=0.5)
    start = time.monotonic()
    proxy.stop()  # must release the held request rather than wait for it
    assert time.monotonic() - start < 1.0


def test_dead_profile_refuses_connections(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy(dead=True)
    assert proxy.url.startswith("http://127.0.0.1:")
    start = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        requests.post(proxy.url, json=rpc("eth_chainId"), timeout=2)
    assert time.monotonic() - start < 1.0
    assert proxy.stats()["requests"] == 0


@pytest.mark.parametrize("use_session", [True, False])
def test_die_after(make_proxy: Callable[..., FaultProxy], use_session: bool) -> None:
    proxy = make_proxy(die_after=3)
    with requests.Session() as session:
        post = session.post if use_session else requests.post
        for _ in range(3):
            assert post(proxy.url, json=rpc("eth_chainId"), timeout=2).status_code == 200
        for _ in range(2):
            with pytest.raises(requests.ConnectionError):
                post(proxy.url, json=rpc("eth_chainId"), timeout=2)
    assert proxy.stats()["forwarded"] == 3


def test_kill_mid_use(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy()
    with requests.Session() as session:
        assert session.post(proxy.url, json=rpc("eth_chainId"), timeout=2).ok
        proxy.kill()
        with pytest.raises(requests.ConnectionError):
            session.post(proxy.url, json=rpc("eth_chainId"), timeout=2)
    with pytest.raises(requests.ConnectionError):
        requests.post(proxy.url, json=rpc("eth_chainId"), timeout=2)
    proxy.kill()  # idempotent, and stop() after kill() is fine too
    proxy.stop()


def test_kill_cuts_request_in_flight(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy(latency_ms=(2000.0, 2000.0))
    threading.Timer(0.2, proxy.kill).start()
    start = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        requests.post(proxy.url, json=rpc("eth_chainId"), timeout=5)
    assert time.monotonic() - start < 1.0
    assert proxy.stats()["injected"] == {"dead": 1}


def _statuses(make_proxy: Callable[..., FaultProxy], seed: int) -> list[int]:
    kinds = ("http_500", "http_503", "http_429", "rpc_error")
    proxy = make_proxy(failure_rate=0.5, failure_kinds=kinds, seed=seed)
    with requests.Session() as session:
        return [
            session.post(proxy.url, json=rpc("eth_chainId"), timeout=2).status_code
            for _ in range(20)
        ]


def test_same_seed_same_fault_sequence(make_proxy: Callable[..., FaultProxy]) -> None:
    first = _statuses(make_proxy, seed=1)
    assert first == _statuses(make_proxy, seed=1)
    assert first != _statuses(make_proxy, seed=2)
    assert len(set(first)) > 2


def test_context_manager_and_validation(upstream: str) -> None:
    with FaultProxy(upstream) as proxy:
        assert requests.post(proxy.url, json=rpc("eth_chainId"), timeout=2).ok
    with pytest.raises(requests.ConnectionError):
        requests.post(proxy.url, json=rpc("eth_chainId"), timeout=2)
    proxy.stop()  # idempotent
    with pytest.raises(ValueError, match="unknown fault"):
        FaultProxy(upstream, Profile(failure_kinds=("nope",)))


def test_profiles() -> None:
    expected = {"healthy", "fast", "medium", "slow", "flaky", "slow-flaky", "dead", "dies-mid-run"}
    assert expected <= PROFILES.keys()
    for name, profile in PROFILES.items():
        assert profile.name == name
        assert set(profile.failure_kinds) <= FAULTS.keys()
    assert PROFILES["dies-mid-run"].die_after == 40
    assert PROFILES["flaky"].failure_rate == pytest.approx(0.3)


def test_standalone_main(upstream: str) -> None:
    cmd = [sys.executable, "-m", "pipeline.simulator", "--upstream", upstream, "--profile", "fast"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        resp = requests.post(url, json=rpc("eth_blockNumber"), timeout=2)
        assert resp.json()["result"] == "0x10"
    finally:
        proc.terminate()
        proc.wait(timeout=5)
