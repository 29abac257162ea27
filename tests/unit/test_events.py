"""Typed run events end to end: enums in the summary and the console, the fast parser's fallbacks
counted from the worker to summary.json and the metrics, and the stall check reading error
classes rather than messages."""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle
import time
from pathlib import Path

import orjson
import pytest

from pipeline.config.settings import BackfillConfig, build_config
from pipeline.errors import ErrorKind
from pipeline.fetch.rpc import RawResponse, RpcClient
from pipeline.fetch.worker import EndpointWorker, WorkerSpec, fetch_range
from pipeline.messages import (
    Attempt,
    Check,
    Checked,
    EndpointState,
    EndpointStatus,
    Event,
    Reaction,
    RunStarted,
    Split,
    Task,
)
from pipeline.plan.runplan import Plan
from pipeline.report.console import event_line
from pipeline.report.metrics import Metrics
from pipeline.report.stats import EndpointStats
from pipeline.report.summary import build_summary
from pipeline.run.supervisor import THROTTLED_STALL_FACTOR, Supervisor
from pipeline.store.layout import INCOMING_DIR
from pipeline.store.manifest import Manifest
from pipeline.store.resume import Resume

CHAIN = 31337
TASK = Task(7, 100, 109)
DOCUMENTED_STATES = {
    "active", "throttled", "backing off", "circuit open", "behind", "suspect", "out"
}  # fmt: skip
SUMMARY_FIELDS = {
    "chain_id", "from_block", "to_block", "end_reason", "blocks", "already_stored_blocks", "logs",
    "files", "stored_logs", "seconds", "logs_per_second", "endpoints", "failed_ranges",
    "unfetched_ranges", "interrupted", "error", "timeline", "events",
}  # fmt: skip
ENDPOINT_FIELDS = {
    "name", "url", "requests", "failures", "tasks", "logs", "avg_latency_ms", "p50_latency_ms",
    "p95_latency_ms", "errors", "last_error", "splits", "throttled", "window", "state",
    "out_reason", "parser_fallbacks", "concurrency", "audits", "audit_mismatches",
    "hash_mismatches", "bloom_mismatches", "verify_requests", "hashes_confirmed",
    "hashes_unconfirmed",
}  # fmt: skip


def make_config(tmp_path: Path, names: tuple[str, ...] = ("a",)) -> BackfillConfig:
    rpc = [f"{name}=http://127.0.0.1:9/{name}" for name in names]
    return build_config(rpc=rpc, output=tmp_path, env={}, stall_timeout=10.0)


def summary_of(stats: list[EndpointStats]) -> dict:
    return build_summary(
        chain_id=CHAIN, from_block=0, to_block=99, end_reason="", blocks=100,
        already_stored_blocks=0, files=1, stored_logs=3, seconds=2.0, endpoints=stats,
        failed=[], unfetched=[], interrupted=False, error="", timeline=None,
    )  # fmt: skip


def logs_body(count: int, pretty: bool) -> bytes:
    """An eth_getLogs answer with `count` logs in TASK's blocks; pretty-printed JSON is what the
    fast parser refuses and the careful path reads."""
    logs = [
        {
            "address": "0x" + f"{i:040x}",
            "topics": ["0x" + f"{i + 1:064x}"],
            "data": "0x" + "ab" * i,
            "blockHash": "0x" + f"{TASK.start + i:064x}",
            "blockNumber": hex(TASK.start + i),
            "blockTimestamp": hex(1_700_000_000 + 12 * i),
            "transactionHash": "0x" + f"{i + 7:064x}",
            "transactionIndex": hex(i),
            "logIndex": hex(i),
            "removed": False,
        }
        for i in range(count)
    ]
    answer = {"jsonrpc": "2.0", "id": 1, "result": logs}
    return json.dumps(answer, indent=2).encode() if pretty else orjson.dumps(answer)


def answering(mocker, config: BackfillConfig, body: bytes) -> RpcClient:
    """A real client (its careful path is the one under test) whose requests get `body`."""
    client = RpcClient(config.endpoints[0], 1.0)
    mocker.patch.object(client, "post", return_value=RawResponse(200, {}, body))
    return client


def worker_spec(config: BackfillConfig) -> WorkerSpec:
    return WorkerSpec(
        "a#0", config.endpoints[0], config.log_filter, CHAIN, False, 1.0, 3,
        output=config.output, to_block=TASK.end, head=TASK.end,
    )  # fmt: skip


# --- enums ---------------------------------------------------------------------------------


def test_summary_endpoint_states_are_enums_that_serialise_to_the_documented_strings(tmp_path):
    config = make_config(tmp_path, tuple(s.name.lower() for s in EndpointStatus))
    stats = [EndpointStats(e) for e in config.endpoints]
    for each, status in zip(stats, EndpointStatus, strict=True):
        each.record_state(EndpointState(each.endpoint.name, status, "why"))
    summary = summary_of(stats)
    assert [e["state"] for e in summary["endpoints"]] == list(EndpointStatus)
    assert all(isinstance(e["state"], EndpointStatus) for e in summary["endpoints"])
    written = orjson.loads(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    assert {e["state"] for e in written["endpoints"]} == DOCUMENTED_STATES
    assert set(written) == SUMMARY_FIELDS
    assert all(set(e) == ENDPOINT_FIELDS for e in written["endpoints"])


def test_error_classes_in_the_summary_are_plain_strings_json_can_key_on(tmp_path):
    stats = EndpointStats(make_config(tmp_path).endpoints[0])
    kind, reaction = ErrorKind.RATE_LIMITED, Reaction.THROTTLE
    stats.record_attempt(Attempt("a", False, 5.0, 1, kind, "slow down", reaction))
    written = orjson.loads(orjson.dumps(summary_of([stats])))
    entry = written["endpoints"][0]
    assert entry["errors"] == {"rate_limited": 1} and entry["throttled"] == 1
    assert entry["last_error"] == "rate_limited: slow down"


def test_events_keep_their_enums_across_a_process_boundary():
    attempt = Attempt("a", False, 5.0, 1, ErrorKind.SERVER, "503", Reaction.RETRY)
    state = EndpointState("a", EndpointStatus.CIRCUIT_OPEN, "5 failures", pause_s=10.0)
    for event in (attempt, state):
        assert pickle.loads(pickle.dumps(event)) == event
    assert pickle.loads(pickle.dumps(attempt)).reaction is Reaction.RETRY


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (
            Attempt("a", False, 12.0, 3, ErrorKind.RATE_LIMITED, "slow down", Reaction.THROTTLE),
            "[a] request failed (task 3) after 12 ms: rate_limited: slow down -> throttle",
        ),
        (
            Attempt("a", False, 12.0, None, ErrorKind.SERVER, "503"),
            "[a] request failed after 12 ms: server_error: 503 -> retry",
        ),
        (
            EndpointState("a", EndpointStatus.BACKING_OFF, "503; pausing 1.0s"),
            "[a] backing off: 503; pausing 1.0s",
        ),
        (
            Split("a", TASK, 104, ErrorKind.RANGE_TOO_LARGE),
            "[a] split task 7 (blocks 100-109) at 104: range_too_large",
        ),
    ],
)
def test_console_lines_show_enums_as_their_strings(event: Event, line: str):
    assert event_line(event, verbose=True)[0] == line


# --- parser fallbacks ----------------------------------------------------------------------


@pytest.mark.parametrize(("pretty", "fell_back"), [(False, False), (True, True)])
def test_fetch_range_says_when_the_fast_parser_refused_the_answer(
    mocker, tmp_path, pretty, fell_back
):
    config = make_config(tmp_path)
    client = answering(mocker, config, logs_body(5, pretty))
    table, parser_fallback = fetch_range(client, TASK, worker_spec(config))
    assert parser_fallback is fell_back
    assert table.num_rows == 5
    assert table["block_number"].to_pylist() == list(range(TASK.start, TASK.start + 5))


def test_a_fallback_is_counted_from_the_worker_to_the_summary_and_the_metrics(mocker, tmp_path):
    config = make_config(tmp_path)
    (tmp_path / INCOMING_DIR).mkdir(parents=True)
    board, results, events = mocker.Mock(), mocker.Mock(), mocker.Mock()
    worker = EndpointWorker(worker_spec(config), board, results, events)
    worker.timestamps.checked = True  # its blockTimestamp passed a check: no header request here
    worker.fetch(answering(mocker, config, logs_body(3, pretty=True)), TASK)
    worker.fetch(answering(mocker, config, logs_body(3, pretty=False)), TASK)
    attempts = [c.args[0] for c in events.put.call_args_list if isinstance(c.args[0], Attempt)]
    assert [a.parser_fallback for a in attempts] == [True, False]
    assert results.put.call_count == 2  # both answers were delivered
    stats, metrics = EndpointStats(config.endpoints[0]), Metrics()
    metrics(RunStarted(0, 99, 100, ("a",)))
    for attempt in attempts:
        stats.record_attempt(attempt)
        metrics(attempt)
    assert summary_of([stats])["endpoints"][0]["parser_fallbacks"] == 1
    fallbacks = metrics.registry.get_sample_value(
        "backfill_parser_fallbacks_total", {"endpoint": "a"}
    )
    assert fallbacks == 1


def test_an_error_body_the_careful_path_refuses_is_a_failure_not_a_fallback(mocker, tmp_path):
    config = make_config(tmp_path)
    board, results, events = mocker.Mock(), mocker.Mock(), mocker.Mock()
    worker = EndpointWorker(worker_spec(config), board, results, events)
    body = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"rate limit exceeded"}}'
    worker.fetch(answering(mocker, config, body), TASK)
    attempts = [c.args[0] for c in events.put.call_args_list if isinstance(c.args[0], Attempt)]
    assert [(a.ok, a.parser_fallback) for a in attempts] == [(False, False)]
    assert attempts[0].error_kind is ErrorKind.RATE_LIMITED
    assert attempts[0].reaction is Reaction.THROTTLE


def test_a_task_claimed_while_the_endpoint_went_into_a_pause_goes_back_at_once(mocker, tmp_path):
    # Another thread's failure paused the endpoint while this thread waited in claim(): holding
    # the lease through the pause kept a healthy endpoint idle for seconds (a balancer behind
    # its head, next to an honest endpoint).
    config = make_config(tmp_path)
    board, results, events = mocker.Mock(), mocker.Mock(), mocker.Mock()
    worker = EndpointWorker(worker_spec(config), board, results, events)

    def claim(*args):
        worker.throttle.on_failure(None)  # the other thread's failure, meanwhile
        return TASK

    board.claim.side_effect = claim
    board.wait_closed.return_value = False
    fetch = mocker.patch.object(worker, "fetch")
    assert worker._step(mocker.Mock()) is False
    board.retry.assert_called_once_with(TASK)
    fetch.assert_not_called()
    assert board.wait_closed.call_args.args[0] > 0  # it waits out the pause without the task


def test_metrics_expose_parser_fallbacks_for_every_endpoint_from_the_start():
    metrics = Metrics()
    metrics(RunStarted(0, 99, 100, ("a", "b")))
    sample = metrics.registry.get_sample_value
    assert sample("backfill_parser_fallbacks_total", {"endpoint": "a"}) == 0
    assert sample("backfill_parser_fallbacks_total", {"endpoint": "b"}) == 0
    metrics(Attempt("b", True, 3.0, 1, parser_fallback=True))
    assert sample("backfill_parser_fallbacks_total", {"endpoint": "b"}) == 1
    assert sample("backfill_endpoint_state", {"endpoint": "b", "state": "active"}) == 1
    metrics(EndpointState("b", EndpointStatus.CIRCUIT_OPEN, "5 failures", pause_s=4.0))
    assert sample("backfill_endpoint_state", {"endpoint": "b", "state": "circuit open"}) == 1
    assert sample("backfill_endpoint_state", {"endpoint": "b", "state": "active"}) == 0


# --- the stall check -----------------------------------------------------------------------


def stalled_supervisor(tmp_path: Path, seconds_without_progress: float) -> Supervisor:
    config = make_config(tmp_path)
    plan = Plan(chain_id=CHAIN, from_block=0, to_block=99, silent=())
    resume = Resume(Manifest(CHAIN, {}, False), staged=(), todo=((0, 99),))
    supervisor = Supervisor(config, plan, resume, lambda event: None, mp.get_context("spawn"))
    supervisor.last_progress = time.monotonic() - seconds_without_progress
    return supervisor


@pytest.mark.parametrize(
    ("kind", "reaction", "gives_up"),
    [
        (ErrorKind.RATE_LIMITED, Reaction.THROTTLE, False),
        (ErrorKind.SERVER, Reaction.RETRY, True),
    ],
)
def test_the_stall_check_gives_a_rate_limited_endpoint_more_time_by_its_error_class(
    tmp_path, kind, reaction, gives_up
):
    supervisor = stalled_supervisor(tmp_path, 10.0 * 2)  # past stall_timeout, not 5x it
    supervisor._handle(Attempt("a", False, 5.0, 1, kind, "no", reaction))
    supervisor._check_stalled()
    assert bool(supervisor.fatal) is gives_up
    if gives_up:
        assert "every endpoint has been failing for 10s" in supervisor.fatal


def test_a_rate_limited_endpoint_still_stalls_the_run_in_the_end(tmp_path):
    supervisor = stalled_supervisor(tmp_path, 10.0 * THROTTLED_STALL_FACTOR + 1)
    attempt = Attempt("a", False, 5.0, 1, ErrorKind.RATE_LIMITED, "slow", Reaction.THROTTLE)
    supervisor._handle(attempt)
    supervisor._handle(EndpointState("a", EndpointStatus.THROTTLED, "slow; pausing 2.0s"))
    supervisor._check_stalled()
    assert supervisor.fatal.startswith("no block was fetched for 50s")
    assert "a: rate_limited: slow" in supervisor.fatal


@pytest.mark.parametrize(("error", "stalls"), [(ErrorKind.CONNECTION, True), (None, False)])
def test_a_failed_request_of_the_checks_is_not_progress_but_an_answered_one_is(
    tmp_path, error, stalls
):
    # A lone endpoint that died leaves its held answers' checks retrying: that must not keep
    # the run from ending at its stall timeout.
    supervisor = stalled_supervisor(tmp_path, 10.0 * 2)
    supervisor._handle(Checked("a", Check.REQUEST, error=error))
    supervisor._check_stalled()
    assert bool(supervisor.fatal) is stalls
