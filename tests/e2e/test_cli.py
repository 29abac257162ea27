"""The command line as a user runs it: exit codes, one-line errors, signals, nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from conftest import node_rows, stored_rows

from pipeline.store.layout import LOGS_DIR


def pipeline(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def start_pipeline(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--rpc", "not a url"],
        ["--rpc", "ftp://127.0.0.1:1"],
        ["--rpc", "http://127.0.0.1:99999"],
        ["--address", "0x1234"],
        ["--topic0", "0xnothex"],
        ["--from-block", "10", "--to-block", "5"],
        ["--from-block", "-1"],
        ["--to-block", "pending"],
        ["--chunk-size", "zero"],
        ["--max-attempts", "0"],
        ["--file-blocks", "0"],
        ["--timeout", "0"],
        ["--concurrency", "0"],
        ["--rps", "0"],
        ["--rps", "fast"],
        ["--config", "/nonexistent/backfill.toml"],
        ["--no-such-flag"],
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, args, node):
    out = tmp_path / "out"
    result = pipeline("backfill", "--rpc", node.url, *args, "--output", str(out))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_to_block_beyond_head_and_from_after_resolved_end_exit_2(tmp_path, node, seeded):
    out = tmp_path / "out"
    beyond = pipeline(
        "backfill",
        "--rpc",
        node.url,
        "--to-block",
        str(seeded.last_block + 10**6),
        "--output",
        str(out),
    )
    after = pipeline(
        "backfill",
        "--rpc",
        node.url,
        "--from-block",
        str(seeded.last_block + 10),
        "--output",
        str(out),
    )
    for result in (beyond, after):
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_all_endpoints_unreachable_exits_1_quickly_with_a_clear_message(tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    result = pipeline(
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


def test_env_vars_supply_endpoints_and_filter(tmp_path, node, seeded):
    env = {**os.environ, "RPC_URLS": node.url, "CONTRACT_ADDRESS": seeded.contracts[0]}
    result = pipeline(
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


def test_a_second_run_resumes_another_filter_is_refused_and_overwrite_starts_over(
    tmp_path, node, seeded
):
    first, last = seeded.first_block, seeded.first_block + 99
    args = ["backfill", "--rpc", node.url, "--from-block", str(first), "--output", str(tmp_path)]
    assert pipeline(*args, "--to-block", str(last)).returncode == 0
    again = pipeline(*args, "--to-block", str(last), "--chunk-size", "7")
    assert again.returncode == 0 and "(100 already stored)" in again.stdout
    other = pipeline(*args, "--to-block", str(last), "--topic0", "0x" + "ab" * 32)
    assert other.returncode == 2 and "another filter" in other.stderr
    assert "--overwrite" in other.stderr and len(other.stderr.strip().splitlines()) == 1
    fresh = pipeline(*args, "--to-block", str(last), "--chunk-size", "7", "--overwrite")
    assert fresh.returncode == 0 and "already stored" not in fresh.stdout
    assert stored_rows(tmp_path) == node_rows(node, first, last)


def test_status_shows_coverage_gaps_rows_and_files(tmp_path, node, seeded):
    first = seeded.first_block
    args = ["backfill", "--rpc", node.url, "--output", str(tmp_path)]
    assert (
        pipeline(*args, "--from-block", str(first), "--to-block", str(first + 99)).returncode == 0
    )
    assert pipeline(*args, "--from-block", "300", "--to-block", "399").returncode == 0
    status = pipeline("status", str(tmp_path))
    assert status.returncode == 0, status.stderr
    rows = len(node_rows(node, first, first + 99)) + len(node_rows(node, 300, 399))
    assert f"{first}-{first + 99}" in status.stdout and "300-399" in status.stdout
    assert f"gaps: {first + 100}-299" in status.stdout
    assert f"rows: {rows:,}" in status.stdout and "logs__" in status.stdout
    missing = pipeline("status", str(tmp_path / "nothing-here"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_gracefully_with_complete_files(tmp_path, node, seeded, proxy, signum, code):
    slow = proxy(latency_ms=(150, 250))
    process = start_pipeline(
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
    )
    lines = []
    while len(lines) < 3:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        lines.append(line)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr
    assert "p95 ms" in stdout and "interrupted" in stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] and summary["unfetched_ranges"]
    files = sorted((tmp_path / LOGS_DIR).iterdir())
    assert all(f.suffix == ".parquet" for f in files)  # no temporary file left behind
    for f in files:
        pq.read_table(f)  # every file is complete
    assert len(stored_rows(tmp_path)) == summary["logs"]
