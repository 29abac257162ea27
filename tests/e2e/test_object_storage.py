"""--output s3://…: a real local S3 (moto's server), the real anvil node, the real CLI. The
store holds exactly the node's logs, a reader of logs/*.parquet never sees a row twice or half a
file (even across SIGKILL and a resume from another staging folder), a second writer is refused
by the lease, and bad URIs or missing credentials stop the run before anything is written."""

from __future__ import annotations

import threading
import time

import orjson
import pytest
from conftest import backfill, node_rows
from helpers import assert_usage_error, kill_at, run_cli, run_cli_in_process, start_cli, wait_for
from s3_fixtures import FAKE_KEY_ID, FAKE_SECRET, visible_rows_once

from pipeline.dev.verify import stored_logs
from pipeline.store.lease import LEASE_KEY

FIRST, LAST = 1, 1200


def cli_args(uri: str, url: str, staging, *extra: str, last: int = LAST) -> list[str]:
    """The backfill command line of these tests (small tasks, small files, quiet)."""
    args = ["backfill", "--rpc", url, "--from-block", str(FIRST), "--to-block", str(last)]
    args += ["--output", uri, "--staging", str(staging), "--chunk-size", "20"]
    return [*args, "--file-blocks", "300", "--quiet", "--timeout", "5", "--stall-timeout", "15"]


def assert_store_equals_node(s3, bucket: str, prefix: str, node, last: int = LAST) -> None:
    """The store holds exactly the node's logs of FIRST..last, each once, recorded in its
    manifest; nothing but the documented objects, and no lease left behind."""
    from conftest import as_tuples

    stored = as_tuples(stored_logs(f"{bucket}/{prefix}/logs", filesystem=s3.fs))
    assert stored == node_rows(node, FIRST, last)
    manifest = orjson.loads(s3.client.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read())
    assert manifest["covered"] == [{"from_block": FIRST, "to_block": last}]
    listed = {f"{prefix}/logs/{f['name']}" for f in manifest["files"]}
    keys = set(s3.keys(bucket))
    assert {k for k in keys if k.startswith(f"{prefix}/logs/")} == listed
    others = keys - listed - {f"{prefix}/{n}" for n in ("manifest.json", "summary.json", "timeline.png")}
    assert others == set(), others  # no lease, no temporary object


def test_a_backfill_into_s3_equals_the_node_and_takes_over_an_expired_lease(tmp_path, node, seeded, s3):
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
    status = run_cli_in_process("status", f"s3://{bucket}/run")
    assert status.returncode == 0 and f"covered: {FIRST}-{LAST}" in status.stdout, status
