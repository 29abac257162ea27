"""The command line as a user runs it: exit codes, one-line errors, signals, nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pyarrow.parquet as pq
import pytest
from conftest import node_rows, stored_rows
from helpers import (
    assert_equals_node,
    assert_usage_error,
    folder_state,
    lines_of,
    run_cli,
    start_cli,
    wait_for,
)

from pipeline.store.layout import LOGS_DIR


def more(*args: str):
    """A further case of a kind the quick subset already has: for the full run only."""
    return pytest.param(list(args), marks=pytest.mark.slow)


@pytest.mark.parametrize(
    "args",
    [
        ["--rpc", "not a url"],
        more("--rpc", "ftp://127.0.0.1:1"),
        more("--rpc", "http://127.0.0.1:99999"),
        ["--address", "0x1234"],
        more("--topic0", "0xnothex"),
        ["--from-block", "10", "--to-block", "5"],
        more("--from-block", "-1"),
        more("--to-block", "pending"),
        ["--chunk-size", "zero"],
        more("--max-attempts", "0"),
        more("--file-blocks", "0"),
        more("--timeout", "0"),
        more("--concurrency", "0"),
        ["--rps", "0"],
        more("--rps", "fast"),
        ["--config", "/nonexistent/backfill.toml"],
        ["--no-such-flag"],
    ],
    ids=" ".join,
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, node):
    out = tmp_path / "out"
    assert_usage_error(run_cli("backfill", "--rpc", node.url, *args, "--output", str(out)), out)
    assert not out.exists()


def test_an_output_that_is_a_file_exits_2_and_says_so(tmp_path, node, seeded):
    out = tmp_path / "out.parquet"
    out.write_bytes(b"mine")
    done = run_cli("backfill", "--rpc", node.url, "--from-block", "1", "--to-block", "10",
                   "--output", str(out))  # fmt: skip
    assert_usage_error(done, tmp_path / "unused")
    assert f"--output {out} is a file: give a folder" in done.stderr
    assert out.read_bytes() == b"mine"


@pytest.mark.slow
def test_to_block_beyond_head_and_from_after_resolved_end_exit_2(tmp_path, node, seeded):
    out = tmp_path / "out"
    beyond = run_cli(
        "backfill",
        "--rpc",
        node.url,
        "--to-block",
        str(seeded.last_block + 10**6),
        "--output",
        str(out),
    )
    after = run_cli(
        "backfill",
        "--rpc",
        node.url,
        "--from-block",
        str(seeded.last_block + 10),
        "--output",
        str(out),
    )
    assert_usage_error(beyond, out)
    assert_usage_error(after, out)
    assert not out.exists()


@pytest.mark.slow
def test_all_endpoints_unreachable_exits_1_quickly_with_a_clear_message(tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    result = run_cli(
        "backfill",
        "--rpc",
        "http://127.0.0.1:9/v3/0123456789abcdef0123456789abcdef",
        "--rpc",
        "http://127.0.0.1:7",
        "--output",
        str(out),
    )
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    assert "no endpoint answered" in result.stderr and "connection refused" in result.stderr
    assert "0123456789abcdef" not in result.stderr + result.stdout
    assert not out.exists()


@pytest.mark.slow
def test_env_vars_supply_endpoints_and_filter(tmp_path, node, seeded):
    env = {**os.environ, "RPC_URLS": node.url, "CONTRACT_ADDRESS": seeded.contracts[0]}
    result = run_cli(
        "backfill",
        "--from-block",
        str(seeded.first_block),
        "--to-block",
        str(seeded.first_block + 199),
        "--output",
        str(tmp_path),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "completed task" in result.stdout and "requests" in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = stored_rows(tmp_path)
    assert summary["logs"] == len(rows) > 0
    assert {r[5] for r in rows} == {seeded.contracts[0]}


@pytest.mark.slow
def test_a_second_run_resumes_another_filter_is_refused_and_overwrite_starts_over(
    tmp_path, node, seeded
):
    first, last = seeded.first_block, seeded.first_block + 99
    args = ["backfill", "--rpc", node.url, "--from-block", str(first), "--output", str(tmp_path)]
    first_run = run_cli(*args, "--to-block", str(last))
    assert first_run.returncode == 0, first_run.stderr
    again = run_cli(*args, "--to-block", str(last), "--chunk-size", "7")
    assert again.returncode == 0 and "(100 already stored)" in again.stdout, again.stdout
    before = folder_state(tmp_path)
    other = run_cli(*args, "--to-block", str(last), "--topic0", "0x" + "ab" * 32)
    refusal = assert_usage_error(other, tmp_path, before)
    assert "another filter" in refusal and "--overwrite" in refusal
    fresh = run_cli(*args, "--to-block", str(last), "--chunk-size", "7", "--overwrite")
    assert fresh.returncode == 0 and "already stored" not in fresh.stdout, fresh.stdout
    assert_equals_node(None, tmp_path, node, first, last)


@pytest.mark.slow
def test_status_shows_coverage_gaps_rows_and_files(tmp_path, node, seeded):
    first = seeded.first_block
    args = ["backfill", "--rpc", node.url, "--output", str(tmp_path)]
    for start, end in ((first, first + 99), (300, 399)):
        run = run_cli(*args, "--from-block", str(start), "--to-block", str(end))
        assert run.returncode == 0, run.stderr
    status = run_cli("status", str(tmp_path))
    assert status.returncode == 0, status.stderr
    rows = len(node_rows(node, first, first + 99)) + len(node_rows(node, 300, 399))
    assert f"{first}-{first + 99}" in status.stdout and "300-399" in status.stdout
    assert f"gaps: {first + 100}-299" in status.stdout
    assert f"rows: {rows:,}" in status.stdout and "logs__" in status.stdout
    assert_usage_error(run_cli("status", str(tmp_path / "nothing-here")), tmp_path / "nothing-here")


@pytest.mark.parametrize(
    "signum,code",
    [(signal.SIGINT, 130), pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_stops_gracefully_with_complete_files(tmp_path, node, seeded, proxy, signum, code):
    slow = proxy(latency_ms=(150, 250))
    process = start_cli(
        "backfill",
        "--rpc",
        slow.url,
        "--from-block",
        str(seeded.first_block),
        "--to-block",
        str(seeded.last_block),
        "--chunk-size",
        "20",
        "--output",
        str(tmp_path),
        stdout=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = lines_of(process.stdout), lines_of(process.stderr)

    def first_task_stored() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the run ended before its first task: {stderr.text()}")
        return "completed task" in stdout.text()

    # Mid-run for sure: the supervisor handles signals, eth_getLogs was served, a task is stored.
    wait_for(first_task_stored, 120, "the first stored task")
    assert slow.stats()["methods"].get("eth_getLogs", 0) >= 1
    process.send_signal(signum)
    assert process.wait(timeout=120) == code, stderr.text()
    assert stdout.ended.wait(30) and stderr.ended.wait(30)
    assert "p95 ms" in stdout.text() and "interrupted" in stderr.text(), stderr.text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] and summary["unfetched_ranges"]
    files = sorted((tmp_path / LOGS_DIR).iterdir())
    assert all(f.suffix == ".parquet" for f in files)  # no temporary file left behind
    for f in files:
        pq.read_table(f)  # every file is complete
    assert len(stored_rows(tmp_path)) == summary["logs"]
