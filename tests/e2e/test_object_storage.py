"""--output s3://…: a real local S3 (moto's server), the real anvil node, the real CLI. The
store holds exactly the node's logs, a reader of logs/*.parquet never sees a row twice or half a
file (even across SIGKILL and a resume from another staging folder), a second writer is refused
by the lease, and bad URIs or missing credentials stop the run before anything is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import orjson
import pyarrow.dataset as pads
import pytest
from conftest import backfill, node_rows
from helpers import (
    CLI_TIMEOUT_S,
    assert_usage_error,
    kill_at,
    run_cli,
    run_cli_in_process,
    start_cli,
    wait_for,
)
from s3_fixtures import FAKE_KEY_ID, FAKE_SECRET, visible_rows_once

from pipeline.dev.verify import stored_logs
from pipeline.store.lease import LEASE_KEY

FIRST, LAST = 1, 1200


def cli_args(uri: str, url: str, staging, *extra: str, last: int = LAST) -> list[str]:
    """The backfill command line of these tests (small tasks, small files, quiet)."""
    args = ["backfill", "--rpc", url, "--from-block", str(FIRST), "--to-block", str(last)]
    args += ["--output", uri, "--staging", str(staging), "--chunk-size", "20", "--file-blocks"]
    return [*args, "300", "--quiet", "--timeout", "5", "--stall-timeout", "15", *extra]


def assert_store_equals_node(s3, bucket: str, prefix: str, node, last: int = LAST) -> None:
    """The store holds exactly the node's logs of FIRST..last, each once, recorded in its
    manifest; nothing but the documented objects, and no lease left behind."""
    from conftest import as_tuples

    stored = as_tuples(stored_logs(f"{bucket}/{prefix}/logs", filesystem=s3.fs))
    assert stored == node_rows(node, FIRST, last)
    manifest = orjson.loads(
        s3.client.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read()
    )
    assert manifest["covered"] == [{"from_block": FIRST, "to_block": last}]
    listed = {f"{prefix}/logs/{f['name']}" for f in manifest["files"]}
    # (pyarrow keeps a "folder" marker object, run/logs/, when it deletes the last file in it:
    # no glob of *.parquet reads it.)
    keys = {k for k in s3.keys(bucket) if not k.endswith("/")}
    assert {k for k in keys if k.startswith(f"{prefix}/logs/")} == listed
    others = (
        keys - listed - {f"{prefix}/{n}" for n in ("manifest.json", "summary.json", "timeline.png")}
    )
    assert others == set(), others  # no lease, no temporary object


def test_a_backfill_into_s3_equals_the_node_and_takes_over_an_expired_lease(
    tmp_path, node, seeded, s3
):
    bucket = s3.new_bucket()
    # A run elsewhere died a while ago: its lease expired, so it is taken over.
    expired = {"owner": "gone", "host": "elsewhere", "pid": 1, "expires": time.time() - 5}
    s3.client.put_object(Bucket=bucket, Key=f"run/{LEASE_KEY}", Body=orjson.dumps(expired))
    result = backfill(f"s3://{bucket}/run", [node.url], from_block=FIRST, to_block=LAST,
                      staging=tmp_path / "staging", chunk_size=50, file_blocks=300)  # fmt: skip
    assert result.exit_code == 0, result.message
    assert result.summary["stored_logs"] == len(node_rows(node, FIRST, LAST))
    assert_store_equals_node(s3, bucket, "run", node)
    summary = s3.client.get_object(Bucket=bucket, Key="run/summary.json")["Body"].read().decode()
    assert FAKE_SECRET not in summary and FAKE_KEY_ID not in summary
    assert not list((tmp_path / "staging" / ".staging").glob("frag__*"))  # all compacted
    # DuckDB over the bucket's logs/*.parquet (through pyarrow's S3 filesystem: DuckDB's own
    # httpfs extension cannot be installed offline): every log once.
    duckdb = pytest.importorskip("duckdb")
    logs = pads.dataset(f"{bucket}/run/logs", filesystem=s3.fs, format="parquet")  # noqa: F841
    [(rows, keys)] = duckdb.sql(
        "SELECT count(*), count(DISTINCT (block_number, log_index)) FROM logs"
    ).fetchall()
    assert rows == keys == len(node_rows(node, FIRST, LAST))
    status = run_cli_in_process("status", f"s3://{bucket}/run")
    assert status.returncode == 0 and f"covered: {FIRST}-{LAST}" in status.stdout, status


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.slow  # two runs of the CLI, one killed: about 20-30 s on 2 busy cores
def test_sigkill_mid_run_into_s3_then_resume_from_another_machine_gives_exactly_the_nodes_logs(
    tmp_path, node, seeded, proxy, s3
):
    bucket, fetching = s3.new_bucket(), proxy(latency_ms=(20, 40))
    uri, logs = f"s3://{bucket}/run", f"{bucket}/run/logs"
    seen: list[tuple[int, int]] = []  # what a reader of logs/*.parquet saw, all along
    stop = threading.Event()

    def read_all_along() -> None:
        while not stop.wait(0.02):  # leave the (in-process) S3 server time to serve the runs
            seen.append(visible_rows_once(s3, logs))

    reader = threading.Thread(target=read_all_along, daemon=True)
    reader.start()
    try:
        run = start_cli(*cli_args(uri, fetching.url, tmp_path / "machine-a"))
        # Mid-run: a window is committed to the store, others are staged or being fetched.
        committed = lambda: any(k.endswith(".parquet") for k in s3.keys(bucket))  # noqa: E731
        assert kill_at(run, committed, "a final file in the store", timeout=90), "ended first"
        wait_for(lambda: _group_gone(run.pid), 30, "the killed run's processes to end")
        # Another machine resumes: the fragments staged on the first are not there, so the
        # blocks the manifest does not cover are fetched again.
        rerun = run_cli(*cli_args(uri, fetching.url, tmp_path / "machine-b"))
        assert rerun.returncode == 0, rerun.stderr
        assert_store_equals_node(s3, bucket, "run", node)
    finally:
        stop.set()
        reader.join(30)
    assert_store_equals_node(s3, bucket, "run", node)
    assert len(seen) > 3 and all(rows == distinct for rows, distinct in seen), seen[-5:]
    assert seen[-1][0] == len(node_rows(node, FIRST, LAST))


def test_a_second_writer_to_the_same_prefix_is_refused_even_with_its_own_staging_folder(
    tmp_path, node, seeded, proxy, s3
):
    bucket, slow = s3.new_bucket(), proxy(latency_ms=(150, 200))
    uri = f"s3://{bucket}/run"
    first = start_cli(*cli_args(uri, slow.url, tmp_path / "a", last=500))
    try:
        lease = f"run/{LEASE_KEY}"
        wait_for(lambda: lease in s3.keys(bucket), 60, "the first run's lease")
        second = run_cli_in_process(*cli_args(uri, node.url, tmp_path / "b", last=500))
        line = assert_usage_error(second, tmp_path / "b")
        assert "another backfill" in line and f"is writing to {uri}" in line, line
        assert first.wait(120) == 0, first.stderr.read().decode()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert_store_equals_node(s3, bucket, "run", node, last=500)


def test_a_live_lease_of_another_machine_is_respected(tmp_path, node, seeded, s3):
    bucket = s3.new_bucket()
    held = {"owner": "x", "host": "elsewhere", "pid": 1, "expires": time.time() + 60}
    s3.client.put_object(Bucket=bucket, Key=f"p/{LEASE_KEY}", Body=orjson.dumps(held))
    refused = run_cli_in_process(*cli_args(f"s3://{bucket}/p", node.url, tmp_path / "s"))
    line = assert_usage_error(refused, tmp_path / "s")
    assert "another backfill (on elsewhere, pid 1) is writing to" in line, line
    assert s3.keys(bucket) == [f"p/{LEASE_KEY}"]


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("ftp://bucket/x", "unknown scheme ftp://"),
        ("s3:///prefix", "the bucket is missing"),
        ("s3://Not_A_Bucket/x", "is not a valid bucket name"),
        ("s3://AKIAX:topsecretvalue@bucket/x", "credentials do not belong in the URI"),
        ("s3://no-such-bucket-here/x", "bucket no-such-bucket-here does not exist"),
    ],
)
def test_a_bad_uri_is_one_line_exit_2_and_nothing_written(tmp_path, s3, uri, says):
    refused = run_cli_in_process(*cli_args(uri, "http://127.0.0.1:9", tmp_path / "staging"))
    line = assert_usage_error(refused, tmp_path / "staging")
    assert says in line and "topsecretvalue" not in line, line


@pytest.mark.parametrize("fault", ["no-credentials", "unreachable"])
def test_missing_credentials_or_an_unreachable_store_is_one_line_exit_2(
    tmp_path, s3, monkeypatch, fault
):
    bucket = s3.new_bucket()
    if fault == "no-credentials":
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(name)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    refused = run_cli_in_process(
        *cli_args(f"s3://{bucket}/p", "http://127.0.0.1:9", tmp_path / "s")
    )
    line = assert_usage_error(refused, tmp_path / "s")
    expected = (
        "no credentials found" if fault == "no-credentials" else "cannot reach the object store"
    )
    assert expected in line and FAKE_SECRET not in line, line
    monkeypatch.undo()
    assert s3.keys(bucket) == []


LATER_CREDENTIALS = """
import os, sys
from multiprocessing import forkserver
from pipeline import build_config, run_backfill
from pipeline.run.lifecycle import process_context

saved = {n: os.environ.pop(n) for n in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
process_context()
forkserver.ensure_running()  # the process server now holds an environment without them
os.environ.update(saved)
uri, rpc, staging = sys.argv[1:]
config = build_config(rpc=[rpc], output=uri, staging=staging, from_block=1, to_block=300,
                      chunk_size=50, file_blocks=300, timeout=5.0, stall_timeout=15.0)
result = run_backfill(config)
print(result.message)
sys.exit(result.exit_code)
"""


def test_a_run_uses_the_credentials_the_environment_has_when_it_starts(tmp_path, node, seeded, s3):
    # A long-lived process (a scheduler's worker) runs backfills one after another while its
    # credentials are renewed: the run's children must not keep those of an earlier run.
    bucket = s3.new_bucket()
    args = [f"s3://{bucket}/run", node.url, str(tmp_path / "staging")]
    done = subprocess.run([sys.executable, "-c", LATER_CREDENTIALS, *args],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert_store_equals_node(s3, bucket, "run", node, last=300)


def test_a_run_that_loses_its_lease_stops_writing_and_exits_1(tmp_path, node, seeded, proxy, s3):
    bucket, slow = s3.new_bucket(), proxy(latency_ms=(100, 150))
    uri, lease = f"s3://{bucket}/run", f"run/{LEASE_KEY}"
    # (--timeout 2: the workers a failed writer no longer reads from are stopped sooner.)
    run = start_cli(*cli_args(uri, slow.url, tmp_path / "a", "--timeout", "2", last=900))
    try:
        staged = lambda: list((tmp_path / "a" / ".staging").glob("frag__*"))  # noqa: E731
        wait_for(staged, 60, "the run's first staged fragment")
        # Another machine took the prefix over (say, this one was cut off for a minute).
        thief = {"owner": "thief", "host": "elsewhere", "pid": 1, "expires": time.time() + 300}
        s3.client.put_object(Bucket=bucket, Key=lease, Body=orjson.dumps(thief))
        assert run.wait(120) == 1
        stderr = run.stderr.read().decode()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert "lost the lease" in stderr, stderr
    manifest = orjson.loads(
        s3.client.get_object(Bucket=bucket, Key="run/manifest.json")["Body"].read()
    )
    assert manifest["files"] == []  # nothing committed once the lease was gone
    assert [
        k for k in s3.keys(bucket) if k.startswith("run/logs/") and k.endswith(".parquet")
    ] == []
    assert (
        orjson.loads(s3.client.get_object(Bucket=bucket, Key=lease)["Body"].read())["owner"]
        == "thief"
    )
