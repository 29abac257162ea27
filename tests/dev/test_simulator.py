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

from pipeline.dev.providers import CAP_ERRORS, CapHit, hint_range
from pipeline.dev.simulator import FAULTS, PROFILES, FaultProxy, Profile, TokenBucket, parse_request

ROOT = Path(__file__).resolve().parents[2]
HEAD = 1000  # the stub chain: blocks 0..HEAD, block b holds b % 4 logs (0, 1, 2, 3, 0, 1, ...)
RESULTS = {"eth_chainId": "0x7a69", "eth_blockNumber": hex(HEAD)}
TAG_BLOCKS = {"latest": HEAD, "pending": HEAD, "safe": HEAD - 32, "finalized": HEAD - 64}


def logs_in(start: int, end: int) -> int:
    """How many logs the stub holds in blocks start..end."""
    return sum(b % 4 for b in range(start, min(end, HEAD) + 1))


def _log(block: int, index: int) -> dict:
    return {
        "address": "0x" + "ab" * 20,
        "topics": [],
        "data": "0x",
        "blockNumber": hex(block),
        "logIndex": hex(index),
        "blockHash": f"0x{block:064x}",
    }


def _block_of(value: Any) -> int:
    return (
        TAG_BLOCKS[value] if value in TAG_BLOCKS else 0 if value == "earliest" else int(value, 16)
    )


def _get_logs(query: dict) -> list[dict]:
    start = _block_of(query.get("fromBlock", "latest"))
    end = min(_block_of(query.get("toBlock", "latest")), HEAD)
    return [_log(b, i) for b in range(start, end + 1) for i in range(b % 4)]


def _answer(call: Any) -> dict:
    method, params = call.get("method"), call.get("params") or []
    if method == "eth_getLogs":
        result: Any = _get_logs(params[0])
    elif method == "eth_getBlockByNumber":
        number = _block_of(params[0])
        result = {"number": hex(number), "hash": f"0x{number:064x}"} if number <= HEAD else None
    elif method == "eth_getBlockReceipts":
        number = _block_of(params[0])
        result = [
            {"blockNumber": hex(number), "logs": [_log(number, i) for i in range(number % 4)]}
        ]
    else:
        result = RESULTS.get(method, method)
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


def rpc(method: str, id_: int = 1, params: list | None = None) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params or []}


def get_logs(start: int | str, end: int | str, id_: int = 1) -> dict:
    """An eth_getLogs call for blocks start..end (ints are sent as hex, tags as they are)."""
    bounds = [hex(b) if isinstance(b, int) else b for b in (start, end)]
    return rpc("eth_getLogs", id_, [{"fromBlock": bounds[0], "toBlock": bounds[1]}])


def post(proxy: FaultProxy, payload: Any) -> requests.Response:
    return requests.post(proxy.url, json=payload, timeout=2)


def test_forwards_single_request_and_counts(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy()
    resp = requests.post(proxy.url, json=rpc("eth_chainId", 7), timeout=2)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json() == {"jsonrpc": "2.0", "id": 7, "result": "0x7a69"}
    stats = proxy.stats()
    assert len(stats.pop("request_times")) == 1
    assert stats.pop("request_methods") == ["eth_chainId"]
    assert stats == {
        "requests": 1,
        "methods": {"eth_chainId": 1},
        "injected": {},
        "forwarded": 1,
        "get_logs": [],
        "throttled": 0,
        "lies": dict.fromkeys(
            ("behind", "drops", "blanks", "orphans", "truncates", "fabricates"), 0
        ),
    }


def test_forwards_batch_over_keep_alive(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy()
    batch = [rpc("eth_chainId", 1), rpc("eth_blockNumber", 2), rpc("eth_blockNumber", 3)]
    with requests.Session() as session:
        for _ in range(3):
            resp = session.post(proxy.url, json=batch, timeout=2)
            assert [r["id"] for r in resp.json()] == [1, 2, 3]
            assert [r["result"] for r in resp.json()] == ["0x7a69", hex(HEAD), hex(HEAD)]
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
        ("http_429_bare", 429, "text/plain"),
        ("http_413_range", 413, "application/json"),
        ("rpc_rate_limit", 200, "application/json"),
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
    cmd = [
        sys.executable,
        "-m",
        "pipeline.dev.simulator",
        "--upstream",
        upstream,
        "--profile",
        "fast",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        resp = requests.post(url, json=rpc("eth_blockNumber"), timeout=2)
        assert resp.json()["result"] == hex(HEAD)
    finally:
        proc.terminate()
        proc.wait(timeout=5)


# --- provider caps -------------------------------------------------------------------------------

QUICKNODE_50 = {"code": -32614, "message": "eth_getLogs is limited to a 50 range"}
INFURA_10 = {
    "code": -32005,
    "message": "query returned more than 10 results. Try with this block range [0x64, 0x6A].",
    "data": {"from": "0x64", "to": "0x6A"},
}
RETH_10 = {"code": -32602, "message": "query exceeds max results 10, retry with the range 100-106"}


# Every case asks for blocks 100..200: 101 blocks and 150 logs; [100, 106] is the largest prefix
# within 10 logs (9 of them), [100, 149] the largest within 50 blocks.
@pytest.mark.parametrize(
    ("fields", "status", "error"),
    [
        ({"result_cap": 10}, 200, INFURA_10),
        ({"result_cap": 10, "dialect": "infura"}, 200, INFURA_10),
        (
            {"result_cap": 10, "dialect": "alchemy"},
            200,
            {
                "code": -32602,
                "message": "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and no limit on the response size, or you can request any block range with a cap of 10 logs in the response. Based on your parameters and the response size limit, this block range should work: [0x64, 0x6a]",
            },
        ),
        ({"result_cap": 10, "dialect": "ankr"}, 200, RETH_10),
        ({"result_cap": 10, "dialect": "drpc"}, 200, RETH_10),
        ({"result_cap": 10, "dialect": "reth"}, 200, RETH_10),
        ({"range_cap": 50}, 413, QUICKNODE_50),
        ({"range_cap": 50, "dialect": "quicknode"}, 413, QUICKNODE_50),
        (
            {"range_cap": 50, "dialect": "alchemy"},
            200,
            {
                "code": -32600,
                "message": "You can make eth_getLogs requests with up to a 50 block range. Based on your parameters, this block range should work: [0x64, 0x95]",
            },
        ),
        (
            {"range_cap": 50, "dialect": "reth"},
            200,
            {"code": -32602, "message": "query exceeds max block range 50"},
        ),
        (
            {"range_cap": 50, "dialect": "publicnode"},
            200,
            {"code": -32000, "message": "exceed maximum block range: 50"},
        ),
        (
            {"range_cap": 50, "dialect": "ankr"},
            200,
            {"code": -32600, "message": "block range is too wide"},
        ),
        (
            {"range_cap": 50, "dialect": "drpc"},
            200,
            {"code": 35, "message": "ranges over 50 blocks are not supported on freetier"},
        ),
    ],
)
def test_cap_refusal_has_the_dialects_exact_shape(
    make_proxy: Callable[..., FaultProxy], fields: dict, status: int, error: dict
) -> None:
    proxy = make_proxy(**fields)
    resp = post(proxy, get_logs(100, 200, 7))
    assert resp.status_code == status
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json() == {"jsonrpc": "2.0", "id": 7, "error": error}
    kind = "range_cap" if "range_cap" in fields else "result_cap"
    assert proxy.stats()["get_logs"] == [(100, 200, kind)]
    assert proxy.stats()["forwarded"] == (kind == "result_cap")  # a range cap never asks upstream


def test_cap_builders_reproduce_real_provider_messages() -> None:
    infura = CAP_ERRORS["infura"].result_error
    alchemy = CAP_ERRORS["alchemy"].result_error
    reth = CAP_ERRORS["reth"]
    assert infura is not None and alchemy is not None
    assert reth.range_error is not None and reth.result_error is not None
    assert infura(CapHit(10_000, (0xBDE5F8, 0x102DBCC))).error == {
        "code": -32005,
        "message": "query returned more than 10000 results. Try with this block range [0xBDE5F8, 0x102DBCC].",
        "data": {"from": "0xBDE5F8", "to": "0x102DBCC"},
    }
    assert alchemy(CapHit(10_000, (0, 0xD043B8), range_cap=2000)).error == {
        "code": -32602,
        "message": "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and no limit on the response size, or you can request any block range with a cap of 10K logs in the response. Based on your parameters and the response size limit, this block range should work: [0x0, 0xd043b8]",
    }
    odd = alchemy(CapHit(1500, None, range_cap=500)).error
    assert odd is not None and "up to a 500 block range" in odd["message"]
    assert "a cap of 1500 logs" in odd["message"] and "should work" not in odd["message"]
    assert reth.result_error(CapHit(20_000, (23879634, 23879696))).error == {
        "code": -32602,
        "message": "query exceeds max results 20000, retry with the range 23879634-23879696",
    }
    assert reth.range_error(CapHit(100_000, None)).error == {
        "code": -32602,
        "message": "query exceeds max block range 100000",
    }
    quicknode = CAP_ERRORS["quicknode"].range_error
    assert quicknode is not None
    refusal = quicknode(CapHit(10_000, None))
    assert refusal.status == 413
    assert refusal.error == {"code": -32614, "message": "eth_getLogs is limited to a 10,000 range"}


def test_calls_within_the_caps_get_upstreams_answer(
    make_proxy: Callable[..., FaultProxy], upstream: str
) -> None:
    proxy = make_proxy(range_cap=50, result_cap=10)
    direct = requests.post(upstream, json=get_logs(100, 105), timeout=2).json()
    assert post(proxy, get_logs(100, 105)).json() == direct
    assert len(direct["result"]) == logs_in(100, 105) == 7
    assert proxy.stats()["get_logs"] == [(100, 105, "ok")]


@pytest.mark.parametrize(("start", "cap"), [(100, 10), (101, 1), (104, 6), (0, 100), (103, 2)])
def test_valid_hint_is_the_largest_prefix_that_fits(
    make_proxy: Callable[..., FaultProxy], start: int, cap: int
) -> None:
    proxy = make_proxy(result_cap=cap, dialect="reth")
    error = post(proxy, get_logs(start, start + 200)).json()["error"]
    low, high = map(int, error["message"].rsplit(" ", 1)[1].split("-"))
    assert low == start
    if logs_in(start, start) > cap:  # block 103 alone holds 3 logs: nothing smaller exists
        assert high == start
    else:
        assert logs_in(start, high) <= cap < logs_in(start, high + 1)


def test_first_block_over_the_cap_hints_that_block_alone(
    make_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = make_proxy(result_cap=2)
    error = post(proxy, get_logs(103, 110)).json()["error"]
    assert error["data"] == {"from": "0x67", "to": "0x67"}
    assert post(proxy, get_logs(103, 103)).json()["error"]["data"] == {"from": "0x67", "to": "0x67"}


@pytest.mark.parametrize(
    ("hint", "shown"),
    [("echo", ("0x64", "0xC8")), ("inverted", ("0xC8", "0x64")), ("outside", ("0xC9", "0x12D"))],
)
def test_misleading_hints(
    make_proxy: Callable[..., FaultProxy], hint: str, shown: tuple[str, str]
) -> None:
    proxy = make_proxy(result_cap=10, hint=hint)
    error = post(proxy, get_logs(100, 200)).json()["error"]
    assert error["message"].endswith(f"Try with this block range [{shown[0]}, {shown[1]}].")
    assert error["data"] == {"from": shown[0], "to": shown[1]}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"result_cap": 10, "dialect": "infura"}, "query returned more than 10 results"),
        ({"result_cap": 10, "dialect": "reth"}, "query exceeds max results 10"),
        (
            {"result_cap": 10, "dialect": "alchemy"},
            "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and no limit on the response size, or you can request any block range with a cap of 10 logs in the response.",
        ),
        (
            {"range_cap": 50, "dialect": "alchemy"},
            "You can make eth_getLogs requests with up to a 50 block range.",
        ),
    ],
)
def test_no_hint_leaves_the_range_out_of_message_and_data(
    make_proxy: Callable[..., FaultProxy], fields: dict, message: str
) -> None:
    proxy = make_proxy(hint="none", **fields)
    error = post(proxy, get_logs(100, 200)).json()["error"]
    assert error["message"] == message
    assert "data" not in error


def test_hint_range_modes() -> None:
    assert hint_range("valid", 100, 200, 150) == (100, 150)
    assert hint_range("echo", 100, 200, 150) == (100, 200)
    assert hint_range("inverted", 100, 200, 150) == (200, 100)
    assert hint_range("outside", 100, 200, 150) == (201, 301)
    assert hint_range("none", 100, 200, 150) is None


def test_pruned_history_below_the_limit(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy(pruned_below=500)
    assert post(proxy, get_logs(499, 510)).json()["error"] == {
        "code": 4444,
        "message": "pruned history unavailable",
    }
    assert len(post(proxy, get_logs(500, 510)).json()["result"]) == logs_in(500, 510)
    assert [o for *_, o in proxy.stats()["get_logs"]] == ["pruned", "ok"]


# --- rate limits ---------------------------------------------------------------------------------


def test_token_bucket_allows_the_rate_and_refuses_above_it() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=10, clock=lambda: now[0])
    assert all(bucket.take() for _ in range(10))  # a full second's burst
    assert not bucket.take()
    for _ in range(50):  # steadily at the rate: never refused
        now[0] += 0.1
        assert bucket.take()
    now[0] += 0.05  # half a token is not a token
    assert not bucket.take()
    assert not bucket.take()  # a refusal costs nothing but does not refill either
    now[0] += 0.05
    assert bucket.take(5)  # a batch may run into debt ...
    now[0] += 0.3
    assert not bucket.take()  # ... and pays it back before the next call passes
    now[0] += 0.2
    assert bucket.take()


@pytest.mark.parametrize(
    ("throttle", "status", "content_type", "retry_after"),
    [
        ("retry-after", 429, "text/plain", "1"),
        ("bare", 429, "text/plain", None),
        ("html", 429, "text/html", None),
        ("infura", 200, "application/json", None),
    ],
)
def test_throttle_answers_over_the_rate_in_the_providers_shape(
    make_proxy: Callable[..., FaultProxy],
    throttle: str,
    status: int,
    content_type: str,
    retry_after: str | None,
) -> None:
    proxy = make_proxy(rps_cap=2, throttle=throttle)
    with requests.Session() as session:
        answers = [session.post(proxy.url, json=get_logs(1, 2, i), timeout=2) for i in range(3)]
    assert [a.status_code for a in answers[:2]] == [200, 200]
    over = answers[2]
    assert over.status_code == status
    assert over.headers["Content-Type"] == content_type
    assert over.headers.get("Retry-After") == retry_after
    if throttle == "infura":
        assert over.json() == {
            "jsonrpc": "2.0",
            "id": 2,
            "error": {
                "code": -32005,
                "message": "project ID request rate exceeded",
                "data": {
                    "see": "https://infura.io/dashboard",
                    "current_rps": 3.0,
                    "allowed_rps": 2.0,
                    "backoff_seconds": 0,
                },
            },
        }
    elif throttle == "html":
        assert over.text.startswith("<html>") and "429 Too Many Requests" in over.text
    stats = proxy.stats()
    assert stats["throttled"] == 1 and stats["forwarded"] == 2
    assert stats["get_logs"] == [(1, 2, "ok"), (1, 2, "ok"), (1, 2, "throttled")]


def test_rate_cap_throttles_above_the_rate_and_not_below(
    make_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = make_proxy(rps_cap=20)
    with requests.Session() as session:

        def status() -> int:
            return session.post(proxy.url, json=rpc("eth_chainId"), timeout=2).status_code

        assert [status() for _ in range(20)] == [200] * 20  # the burst: one second's worth
        for _ in range(6):  # then half the rate, bucket empty: never throttled
            time.sleep(0.1)
            assert status() == 200
        flood = [status() for _ in range(30)]
    assert 429 in flood
    assert proxy.stats()["throttled"] == flood.count(429)
    times = proxy.stats()["request_times"]
    assert len(times) == 56 and times == sorted(times)


def test_infura_throttles_the_calls_of_a_batch_one_by_one(
    make_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = make_proxy(rps_cap=2, throttle="infura")
    resp = post(proxy, [get_logs(1, 2, 1), rpc("eth_chainId", 2), get_logs(3, 4, 3)])
    assert resp.status_code == 200
    answers = resp.json()
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert "result" in answers[0] and answers[1]["result"] == "0x7a69"
    assert answers[2]["error"]["code"] == -32005
    assert proxy.stats()["get_logs"] == [(1, 2, "ok"), (3, 4, "throttled")]
    assert proxy.stats()["throttled"] == 1


def test_a_batch_spends_a_token_per_call(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy(rps_cap=2)
    batch = [rpc("eth_chainId", i) for i in range(4)]
    assert post(proxy, batch).status_code == 200  # allowed while a token is left ...
    assert post(proxy, rpc("eth_chainId")).status_code == 429  # ... but it used four


# --- lagging node --------------------------------------------------------------------------------


def test_lagging_node_reports_and_serves_an_old_head(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy(lag_blocks=10)

    def block(tag: str) -> Any:
        return post(proxy, rpc("eth_getBlockByNumber", 1, [tag, False])).json()["result"]

    assert post(proxy, rpc("eth_blockNumber", 5)).json() == {
        "jsonrpc": "2.0",
        "id": 5,
        "result": hex(HEAD - 10),
    }
    assert block("latest")["number"] == hex(HEAD - 10)
    assert block("safe")["number"] == hex(HEAD - 32)  # already behind the lagged head
    assert block("finalized")["number"] == hex(HEAD - 64)
    assert block(hex(HEAD - 5)) is None  # upstream has it, this node does not yet
    assert block(hex(HEAD - 20))["number"] == hex(HEAD - 20)
    far = make_proxy(lag_blocks=300)
    safe = post(far, rpc("eth_getBlockByNumber", 1, ["safe", False])).json()["result"]
    assert safe["number"] == hex(HEAD - 300)  # never ahead of its own head


def test_lagging_node_answers_empty_past_its_head(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy(lag_blocks=10)  # its head: 990
    assert post(proxy, get_logs(985, 995)).json()["result"] == []  # no error, nothing
    assert len(post(proxy, get_logs(980, 990)).json()["result"]) == logs_in(980, 990)
    assert len(post(proxy, get_logs(985, "latest")).json()["result"]) == logs_in(985, 990)
    assert post(proxy, get_logs(992, 992)).json()["result"] == []  # upstream has none there either
    assert proxy.stats()["get_logs"] == [
        (985, 995, "lagged"),
        (980, 990, "ok"),
        (985, 990, "ok"),
        (992, 992, "ok"),
    ]


def test_lagging_node_partial_drops_logs_past_its_head(
    make_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = make_proxy(lag_blocks=10, lag_mode="partial")
    logs = post(proxy, get_logs(985, 995)).json()["result"]
    assert len(logs) == logs_in(985, 990) < logs_in(985, 995)
    assert max(int(log["blockNumber"], 16) for log in logs) <= HEAD - 10
    assert proxy.stats()["get_logs"] == [(985, 995, "lagged")]


# --- whole-request refusals ----------------------------------------------------------------------

QUOTA_TEXT = "Monthly capacity limit exceeded. Visit https://dashboard.alchemy.com/settings/billing to upgrade your scaling policy for continued service."


def test_quota_exhausted_after_n_requests(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy(quota_after=2)
    with requests.Session() as session:
        answers = [session.post(proxy.url, json=get_logs(1, 2), timeout=2) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 403, 403]
    assert answers[2].text == QUOTA_TEXT
    assert [o for *_, o in proxy.stats()["get_logs"]] == ["ok", "ok", "quota", "quota"]
    as_rpc = make_proxy(quota_after=0, quota_mode="rpc")
    resp = post(as_rpc, rpc("eth_chainId", 9))
    assert resp.status_code == 403
    assert resp.json() == {
        "jsonrpc": "2.0",
        "id": 9,
        "error": {"code": -32600, "message": QUOTA_TEXT},
    }


def test_unauthorized_refuses_every_request(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy(unauthorized=True)
    resp = post(proxy, get_logs(1, 2, 4))
    assert resp.status_code == 401
    assert resp.json() == {
        "jsonrpc": "2.0",
        "id": 4,
        "error": {"code": -32000, "message": "invalid project id"},
    }
    assert post(proxy, rpc("eth_chainId")).status_code == 401
    assert proxy.stats()["get_logs"] == [(1, 2, "unauthorized")]
    assert proxy.stats()["forwarded"] == 0


def test_truncated_body_is_a_complete_response_with_half_the_json(
    make_proxy: Callable[..., FaultProxy], upstream: str
) -> None:
    proxy = make_proxy(failure_rate=1.0, failure_kinds=("truncated",))
    full = requests.post(upstream, json=get_logs(100, 120), timeout=2).content
    resp = post(proxy, get_logs(100, 120))
    assert resp.status_code == 200
    assert resp.content == full[: len(full) // 2]
    assert int(resp.headers["Content-Length"]) == len(resp.content)
    with pytest.raises(ValueError):
        resp.json()
    assert proxy.stats()["injected"] == {"truncated": 1}
    assert proxy.stats()["get_logs"] == [(100, 120, "truncated")]


# --- batches and records -------------------------------------------------------------------------


def test_batch_calls_get_per_call_treatment_in_order(
    make_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = make_proxy(range_cap=50, result_cap=10)
    batch = [
        get_logs(100, 105, 1),
        get_logs(100, 200, 2),
        rpc("eth_chainId", 3),
        get_logs(100, 140, 4),
    ]
    resp = post(proxy, batch)
    assert resp.status_code == 200  # mixed outcomes: errors travel inside the array
    answers = resp.json()
    assert [a["id"] for a in answers] == [1, 2, 3, 4]
    assert len(answers[0]["result"]) == logs_in(100, 105)
    assert answers[1]["error"] == QUICKNODE_50
    assert answers[2]["result"] == "0x7a69"
    assert answers[3]["error"]["code"] == -32005
    assert proxy.stats()["get_logs"] == [
        (100, 105, "ok"),
        (100, 200, "range_cap"),
        (100, 140, "result_cap"),
    ]


def test_batch_shares_a_status_only_when_every_call_has_it(
    make_proxy: Callable[..., FaultProxy],
) -> None:
    proxy = make_proxy(range_cap=50)
    resp = post(proxy, [get_logs(0, 100, 1), get_logs(0, 200, 2)])
    assert resp.status_code == 413
    assert [a["error"] for a in resp.json()] == [
        {"code": -32614, "message": "eth_getLogs is limited to a 50 range"}
    ] * 2


def test_lag_applies_to_each_call_of_a_batch(make_proxy: Callable[..., FaultProxy]) -> None:
    proxy = make_proxy(lag_blocks=10)
    batch = [rpc("eth_blockNumber", 1), rpc("eth_chainId", 2), get_logs(995, 996, 3)]
    assert [a["result"] for a in post(proxy, batch).json()] == [hex(HEAD - 10), "0x7a69", []]


def test_get_logs_records_ranges_and_outcomes_in_arrival_order(
    make_proxy: Callable[..., FaultProxy],
) -> None:
    faulty = make_proxy(failure_rate=1.0, failure_kinds=("http_500",))
    post(faulty, get_logs(5, 6))
    post(faulty, get_logs("earliest", "latest"))  # tags it never resolved: recorded as None
    assert faulty.stats()["get_logs"] == [(5, 6, "http_500"), (None, None, "http_500")]
    plain = make_proxy()
    post(plain, [get_logs(1, 2, 1), rpc("eth_chainId", 2), get_logs(3, 4, 3)])
    assert plain.stats()["get_logs"] == [(1, 2, "ok"), (3, 4, "ok")]


# --- profiles ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_constructs_and_serves(upstream: str, name: str) -> None:
    profile = PROFILES[name]
    assert profile.name == name and profile.description
    with FaultProxy(upstream, profile) as proxy:
        if profile.dead:
            with pytest.raises(requests.ConnectionError):
                post(proxy, rpc("eth_chainId"))
            return
        statuses = []
        with requests.Session() as session:
            for i in range(5):  # random faults may eat a few; some answer must come
                try:
                    resp = session.post(proxy.url, json=get_logs(990, 991, i), timeout=0.5)
                except requests.RequestException:
                    continue
                statuses.append(resp.status_code)
        assert statuses
        assert proxy.stats()["requests"] >= len(statuses)


def test_tiny_result_cap_refuses_logs_but_forwards_block_receipts_untouched(
    upstream: str,
) -> None:
    with FaultProxy(upstream, PROFILES["tiny-result-cap"]) as proxy:
        # Blocks 101 and 102 hold 3 logs; block 103 adds 3 more and overflows the cap of 5.
        assert post(proxy, get_logs(101, 200)).json()["error"]["data"] == {
            "from": "0x65",
            "to": "0x66",
        }
        call = rpc("eth_getBlockReceipts", 3, [hex(103)])
        direct = requests.post(upstream, json=call, timeout=2).json()
        assert post(proxy, call).json() == direct


def test_named_profiles_sized_for_the_test_chain() -> None:
    assert PROFILES["range-cap"].range_cap == 100
    assert PROFILES["result-cap"].result_cap == 1000
    assert PROFILES["tiny-result-cap"].result_cap == 5  # under one block's ~20 logs
    assert PROFILES["rate-limited"].rps_cap == 20
    assert PROFILES["lagging"].lag_blocks == 500
    assert PROFILES["lagging-partial"].lag_mode == "partial"
    assert PROFILES["billing"].quota_after == 30
    assert PROFILES["pruned"].pruned_below == 1000
    assert PROFILES["truncated"].failure_kinds == ("truncated",)
    assert PROFILES["hangs"].failure_kinds == ("timeout",)


@pytest.mark.parametrize(
    "fields",
    [
        {"dialect": "nope"},
        {"range_cap": 10, "dialect": "infura"},  # Infura has no range-cap shape
        {"result_cap": 10, "dialect": "quicknode"},
        {"result_cap": 10, "dialect": "publicnode"},
        {"hint": "maybe"},
        {"throttle": "polite"},
        {"lag_mode": "sideways"},
        {"quota_mode": "email"},
        {"range_cap": 0},
        {"rps_cap": 0},
        {"lag_blocks": -1},
    ],
)
def test_profile_validation(upstream: str, fields: dict) -> None:
    with pytest.raises(ValueError):
        FaultProxy(upstream, Profile(**fields))


def test_standalone_list_prints_every_profile_with_its_description() -> None:
    cmd = [sys.executable, "-m", "pipeline.dev.simulator", "--list"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == len(PROFILES)
    for line, (name, profile) in zip(lines, PROFILES.items(), strict=True):
        assert line.split()[0] == name and line.endswith(profile.description)
