"""End to end against the real anvil node: the Parquet output equals the node's logs row for row."""

from __future__ import annotations

import http.server
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import backfill, node_rows, plan_tasks, stored_rows
from helpers import CLI_TIMEOUT_S, assert_equals_node, wait_for

from pipeline.config.settings import build_config
from pipeline.errors import NoEndpointError, RpcError
from pipeline.fetch import answers, nativelogs
from pipeline.fetch.headers import block_hashes
from pipeline.fetch.rpc import RpcClient
from pipeline.fetch.worker import WorkerSpec, fetch_range
from pipeline.messages import (
    EndpointState,
    EndpointStatus,
    Notice,
    ProcessStarted,
    Task,
    TaskWritten,
    WorkerStarted,
)

CHUNK = 100  # 30 tasks over the seeded 3000 blocks
JSON = {"Content-Type": "application/json"}


def test_three_providers_of_different_latency_give_the_nodes_logs(tmp_path, node, seeded, proxy):
    fast, medium, slow = (
        proxy(latency_ms=(0, 2)),
        proxy(latency_ms=(20, 30)),
        proxy(latency_ms=(150, 200)),
    )
    result = backfill(
        tmp_path,
        [f"fast={fast.url}", f"medium={medium.url}", f"slow={slow.url}"],
        from_block=seeded.first_block,
        to_block=seeded.last_block,
        chunk_size=CHUNK,
    )
    assert_equals_node(result, tmp_path, node, seeded.first_block, seeded.last_block)
    tasks = {e["name"]: e["tasks"] for e in result.summary["endpoints"]}
    assert tasks["fast"] > 2 * tasks["slow"], tasks
    assert sum(tasks.values()) == len(plan_tasks(seeded.first_block, seeded.last_block, CHUNK))
    summary = (tmp_path / "summary.json").read_text()
    assert '"p95_latency_ms"' in summary


def test_an_endpoint_failing_30_percent_of_requests_loses_nothing(tmp_path, node, seeded, proxy):
    flaky = proxy(
        latency_ms=(0, 5),
        failure_rate=0.3,
        seed=3,
        failure_kinds=("http_500", "http_502", "http_503", "http_429", "drop", "rpc_error"),
    )
    healthy = proxy(latency_ms=(5, 10))
    result = backfill(
        tmp_path,
        [f"flaky={flaky.url}", f"healthy={healthy.url}"],
        from_block=seeded.first_block,
        to_block=seeded.last_block,
        chunk_size=CHUNK,
    )
    assert_equals_node(result, tmp_path, node, seeded.first_block, seeded.last_block)
    flaky_stats = next(e for e in result.summary["endpoints"] if e["name"] == "flaky")
    assert flaky_stats["failures"] > 0


@pytest.mark.slow
def test_alone_a_flaky_endpoint_still_delivers_everything(tmp_path, node, seeded, proxy):
    flaky = proxy(failure_rate=0.3, seed=5, failure_kinds=("http_503", "drop"))
    result = backfill(
        tmp_path,
        [flaky.url],
        from_block=seeded.first_block,
        to_block=seeded.first_block + 599,
        chunk_size=CHUNK,
    )
    assert_equals_node(result, tmp_path, node, seeded.first_block, seeded.first_block + 599)


@pytest.mark.slow
def test_an_endpoint_dead_from_the_start_is_worked_around(tmp_path, node, seeded, proxy):
    dead, healthy = proxy(dead=True), proxy(latency_ms=(1, 3))
    notices = []
    result = backfill(
        tmp_path,
        [f"dead={dead.url}", f"healthy={healthy.url}"],
        report=notices.append,
        from_block=seeded.first_block,
        to_block=seeded.last_block,
        chunk_size=CHUNK,
    )
    assert_equals_node(result, tmp_path, node, seeded.first_block, seeded.last_block)
    assert any(isinstance(n, Notice) and "dead did not answer" in n.text for n in notices)


@pytest.mark.slow
def test_an_endpoint_dying_mid_run_is_worked_around(tmp_path, node, seeded, proxy):
    dying, healthy = proxy(die_after=5, latency_ms=(0, 2)), proxy(latency_ms=(10, 20))
    result = backfill(
        tmp_path,
        [f"dying={dying.url}", f"healthy={healthy.url}"],
        from_block=seeded.first_block,
        to_block=seeded.last_block,
        chunk_size=CHUNK,
    )
    assert_equals_node(result, tmp_path, node, seeded.first_block, seeded.last_block)
    dying_stats = next(e for e in result.summary["endpoints"] if e["name"] == "dying")
    assert dying_stats["failures"] > 0 and 0 < dying_stats["tasks"] <= 5


def test_a_sigkilled_worker_loses_no_task(tmp_path, node, seeded, proxy):
    victim_proxy, other = proxy(latency_ms=(40, 60)), proxy(latency_ms=(40, 60))
    pids: dict[str, int] = {}
    killed: list[int] = []

    def asked_for_more_logs() -> bool:
        return victim_proxy.stats()["methods"].get("eth_getLogs", 0) >= 2

    def report(event):
        if isinstance(event, WorkerStarted):
            pids[event.worker_id] = event.pid
        if isinstance(event, TaskWritten) and event.endpoint == "victim" and not killed:
            # Its next request is out (and takes >= 40 ms): it dies holding that task's lease.
            wait_for(asked_for_more_logs, 30, "the victim to claim its next task")
            killed.append(pids["victim#0"])
            os.kill(pids["victim#0"], signal.SIGKILL)

    notices = []
    result = backfill(
        tmp_path,
        [f"victim={victim_proxy.url}", f"other={other.url}"],
        report=lambda e: (report(e), notices.append(e)),
        from_block=seeded.first_block,
        to_block=seeded.last_block,
        chunk_size=CHUNK,
    )
    assert killed, "the victim never completed a task"
    assert_equals_node(result, tmp_path, node, seeded.first_block, seeded.last_block)
    died = [n.text for n in notices if isinstance(n, Notice) and "victim died" in n.text]
    assert died and int(re.search(r"(\d+) tasks requeued", died[0])[1]) >= 1, died
    assert "victim#1" in pids  # it was replaced


@pytest.mark.slow
def test_all_endpoints_dying_mid_run_ends_with_exit_1_and_failed_ranges(tmp_path, seeded, proxy):
    a, b = proxy(die_after=3), proxy(die_after=3)
    started = time.monotonic()
    result = backfill(
        tmp_path,
        [a.url, b.url],
        from_block=seeded.first_block,
        to_block=seeded.last_block,
        chunk_size=CHUNK,
        stall_timeout=3,
    )
    assert time.monotonic() - started < 60
    assert result.exit_code == 1
    assert result.summary["failed_ranges"] and "every endpoint" in result.message
    # What was fetched is written and valid.
    assert len(stored_rows(tmp_path)) == result.summary["logs"]


def test_address_and_topic_or_lists_give_the_nodes_filtered_logs(tmp_path, node, seeded, proxy):
    p = proxy()
    addresses = list(seeded.contracts[:2])
    topics = list(seeded.topic0s[:2])
    result = backfill(
        tmp_path,
        [p.url],
        from_block=seeded.first_block,
        to_block=seeded.last_block,
        chunk_size=500,
        addresses=addresses,
        topics=[topics],
    )
    assert_equals_node(
        result, tmp_path, node, seeded.first_block, seeded.last_block,
        addresses=addresses, topics=[topics],
    )  # fmt: skip
    assert 0 < result.summary["logs"] < seeded.logs


def test_hex_output_holds_the_same_rows(tmp_path, node, seeded, proxy):
    p = proxy()
    end = seeded.first_block + 299
    result = backfill(
        tmp_path, [p.url], from_block=seeded.first_block, to_block=end, hex_output=True
    )
    assert_equals_node(result, tmp_path, node, seeded.first_block, end)


@pytest.mark.parametrize("to_block", ["latest", "finalized", "safe"])
def test_block_tags_resolve_against_the_node(tmp_path, node, seeded, proxy, to_block):
    p = proxy()
    result = backfill(tmp_path, [p.url], from_block=seeded.last_block - 100, to_block=to_block)
    assert result.exit_code == 0
    assert result.summary["to_block"] <= seeded.last_block


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    [
        "http_500",
        "http_502",
        "http_503",
        "http_429",
        "http_429_html",
        "drop",
        "timeout",
        "rpc_error",
    ],
)
def test_every_fault_class_on_one_endpoint_loses_nothing(tmp_path, node, seeded, proxy, kind):
    faulty = proxy(failure_rate=0.5, failure_kinds=(kind,), seed=11)
    # Slow enough, and tasks enough, that the faulty endpoint's worker gets some of them even
    # when it starts late on a loaded machine (6 tasks of 5-10 ms were gone before it came).
    healthy = proxy(latency_ms=(30, 50))
    end = seeded.first_block + 1499
    result = backfill(
        tmp_path,
        [f"faulty={faulty.url}", f"healthy={healthy.url}"],
        from_block=seeded.first_block,
        to_block=end,
        chunk_size=CHUNK,
        timeout=1.0,
    )
    assert_equals_node(result, tmp_path, node, seeded.first_block, end)
    faulty_stats = next(e for e in result.summary["endpoints"] if e["name"] == "faulty")
    # The proxy also counts the faults it put on the start-up probes.
    assert 0 < faulty_stats["failures"] <= faulty.stats()["injected"][kind]


def test_a_range_without_logs_still_gives_one_queryable_empty_file(tmp_path, node, seeded, proxy):
    p = proxy()
    nobody = ["0x" + "00" * 19 + "01"]
    result = backfill(
        tmp_path,
        [p.url],
        from_block=seeded.first_block,
        to_block=seeded.last_block,
        addresses=nobody,
    )
    assert_equals_node(
        result, tmp_path, node, seeded.first_block, seeded.last_block, addresses=nobody
    )
    assert result.summary["logs"] == 0 and stored_rows(tmp_path) == []
    files = list((tmp_path / "logs").iterdir())
    assert len(files) == 1 and result.summary["files"] == 1


@pytest.mark.slow
def test_a_worker_sigkilled_while_backing_off_does_not_hang_the_run(tmp_path, node, seeded, proxy):
    # Regression: a worker killed inside a multiprocessing.Event.wait() left the Event's
    # semaphores so that the supervisor's stop blocked forever.
    broken, healthy = (
        proxy(failure_rate=1.0, failure_kinds=("http_503",)),
        proxy(latency_ms=(20, 30)),
    )
    pids: dict[str, int] = {}
    killed: list[int] = []

    def report(event):
        if isinstance(event, WorkerStarted):
            pids[event.worker_id] = event.pid
        if (
            isinstance(event, EndpointState)
            and event.state in (EndpointStatus.BACKING_OFF, EndpointStatus.CIRCUIT_OPEN)
            and event.endpoint == "broken"
            and not killed
        ):
            # Said just before it pauses: it is now waiting out its backoff (1 s or more).
            killed.append(pids["broken#0"])
            os.kill(pids["broken#0"], signal.SIGKILL)

    started = time.monotonic()
    result = backfill(
        tmp_path,
        [f"broken={broken.url}", f"healthy={healthy.url}"],
        report=report,
        from_block=seeded.first_block,
        to_block=seeded.first_block + 999,
        chunk_size=CHUNK,
    )
    assert killed and time.monotonic() - started < 60
    assert_equals_node(result, tmp_path, node, seeded.first_block, seeded.first_block + 999)


@pytest.mark.slow
@pytest.mark.parametrize(
    "role,reason", [("writer", "writer process died"), ("queue", "task queue")]
)
def test_losing_the_writer_or_the_queue_ends_with_exit_1_and_valid_files(
    tmp_path, node, seeded, proxy, role, reason
):
    p = proxy(latency_ms=(20, 30))
    pids: dict[str, int] = {}
    killed: list[int] = []

    def report(event):
        if isinstance(event, ProcessStarted):
            pids[event.role] = event.pid
        if isinstance(event, TaskWritten) and event.task.task_id >= 2 and not killed:
            killed.append(pids[role])
            os.kill(pids[role], signal.SIGKILL)

    started = time.monotonic()
    result = backfill(
        tmp_path,
        [p.url],
        report=report,
        from_block=seeded.first_block,
        to_block=seeded.last_block,
        chunk_size=CHUNK,
    )
    assert killed and time.monotonic() - started < 60
    assert result.exit_code == 1 and reason in result.message, result.message
    assert result.summary["unfetched_ranges"] or result.summary["failed_ranges"]
    rows = stored_rows(tmp_path)
    assert len(rows) == len(set(rows)) and set(rows) <= set(
        node_rows(node, seeded.first_block, seeded.last_block)
    )
    assert all(f.suffix == ".parquet" for f in (tmp_path / "logs").iterdir())


def test_a_big_answer_is_parsed_a_piece_at_a_time_into_the_nodes_rows(node, seeded, monkeypatch):
    monkeypatch.setattr(answers, "PARSE_PIECE_BYTES", 50_000)  # the real one is 16 MiB
    # The C parser reads a whole body at once; the numpy fallback is the one that reads pieces.
    monkeypatch.setattr(nativelogs, "native_table", lambda *args: None)
    config = build_config(rpc=[node.url], output=Path("unused"))
    spec = WorkerSpec("w", config.endpoints[0], config.log_filter, 31337, False, 10.0, 3)
    start = seeded.first_block
    client = RpcClient(config.endpoints[0], 10.0)
    table, parser_fallback = fetch_range(client, Task(1, start, start + 299), spec)
    assert not parser_fallback
    assert table.num_rows > 1000 and len(table["block_number"].chunks) > 10
    rows = sorted(
        zip(table["block_number"].to_pylist(), table["log_index"].to_pylist(), strict=True)
    )
    assert rows == [row[:2] for row in node_rows(node, start, start + 299)]


def test_block_hashes_come_in_one_batch_or_one_by_one_where_batches_are_refused(node, seeded):
    blocks = list(range(seeded.first_block, seeded.first_block + 32))
    endpoint = build_config(rpc=[node.url], output=Path("unused")).endpoints[0]
    single = {b: RpcClient(endpoint, 10.0).block_hash(b) for b in blocks}
    assert RpcClient(endpoint, 10.0).block_hashes(blocks) == single

    class NoBatches(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if body.startswith(b"["):
                answer = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"no batch"}}'
            else:
                answer = requests.post(node.url, data=body, headers=JSON, timeout=10).content
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoBatches) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        refusing = build_config(rpc=[url], output=Path("unused")).endpoints[0]
        with pytest.raises(RpcError):
            RpcClient(refusing, 10.0).block_hashes(blocks)
        assert block_hashes(refusing, 10.0, blocks) == single
        server.shutdown()


IN_THE_CALLERS_PROCESS = """
import os
import sys
import pyarrow as pa
from pipeline import build_config, run_backfill

if __name__ == "__main__":
    before = pa.default_memory_pool().backend_name
    rpc, output = sys.argv[1:]
    config = build_config(rpc=[rpc], output=output, from_block=1, to_block=300, chunk_size=50)
    result = run_backfill(config)
    pool_of_children = os.environ["ARROW_DEFAULT_MEMORY_POOL"]
    print(result.exit_code, before, pa.default_memory_pool().backend_name, pool_of_children)
"""


def test_a_run_called_from_a_script_keeps_the_scripts_process_lean(tmp_path, node, seeded):
    # The verifier's threads run in the caller's process: with pyarrow's own allocator (a heap
    # per thread) they held ~300 MB more there than the command line's process does.
    script = tmp_path / "script.py"
    script.write_text(IN_THE_CALLERS_PROCESS)
    # (An earlier run in this test process set the variable its children inherit: not here.)
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run([sys.executable, str(script), node.url, str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    code, before, after, children = done.stdout.split()
    if before == "system":
        pytest.skip("pyarrow allocates with the system allocator here already")
    # pyarrow came before the run here: its pool is switched; the run's children load it so.
    assert (code, after, children) == ("0", "system", "system")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_url_that_redirects_is_followed_only_where_a_post_stays_a_post(
    tmp_path, node, seeded, status
):
    # After a 301, 302 or 303 requests sent a GET, which no JSON-RPC endpoint answers: anvil's
    # "Connection header did not include 'upgrade'" was reported as an exhausted quota.
    KEY = "0123456789abcdef0123456789abcdef"  # (anvil answers at / only)

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(status)
            self.send_header("Location", node.url + ("" if status > 303 else f"/v3/{KEY}"))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    first, last = seeded.first_block, seeded.first_block + 99
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            if status in (307, 308):  # the endpoint moved and takes the same POST there
                result = backfill(tmp_path, [url], from_block=first, to_block=last)
                assert_equals_node(result, tmp_path, node, first, last)
                return
            with pytest.raises(NoEndpointError) as raised:
                backfill(tmp_path, [url], from_block=first, to_block=last)
        finally:
            server.shutdown()
    message = str(raised.value)
    assert f"moved: HTTP {status}: the URL redirects to {node.url}/v3/***" in message, message
    assert KEY not in message  # the key in the new URL is not shown
    assert not list(tmp_path.iterdir())


def test_one_url_given_twice_is_fetched_from_but_noticed(tmp_path, node, seeded):
    # Two names for one node: its audits would compare it with itself.
    events, first, last = [], seeded.first_block, seeded.first_block + 99
    result = backfill(tmp_path, [f"a={node.url}", f"b={node.url}"], report=events.append,
                      from_block=first, to_block=last)  # fmt: skip
    assert_equals_node(result, tmp_path, node, first, last)
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert any(n.startswith("a and b are one URL") for n in notices), notices
