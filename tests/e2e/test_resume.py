"""Exactly-once output across crashes, against the real anvil node: kill the run at random
moments, resume, change the chunk size or the endpoints, extend the range, reorg the chain, fill
the disk; the Parquet output must always end up equal to the node's logs, row for row."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import backfill, node_rows, stored_rows

from pipeline.dev.devnet import Anvil, find_anvil
from pipeline.dev.seeding import seed_logs
from pipeline.dev.simulator import FaultProxy, Profile
from pipeline.messages import ProcessStarted
from pipeline.store.layout import LOGS_DIR, STAGING_DIR

FIRST, LAST = 1, 1500


def start(out: Path, url: str, *extra: str) -> subprocess.Popen:
    """The CLI as a user runs it, in its own process group so it can be killed whole."""
    args = ["backfill", "--rpc", url, "--from-block", str(FIRST), "--to-block", str(LAST)]
    args += ["--output", str(out), "--chunk-size", "20", "--file-blocks", "300", "--quiet"]
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def assert_readers_see_no_duplicate(out: Path) -> None:
    """What `read_parquet('OUT/**/*.parquet')` would read: whole files, no row twice."""
    files = sorted(out.glob("**/*.parquet"))
    assert all(f.parent.name == LOGS_DIR for f in files), files
    keys = [
        (row["block_number"], row["log_index"])
        for f in files
        for row in pq.read_table(f, columns=["block_number", "log_index"]).to_pylist()
    ]
    assert len(keys) == len(set(keys))


def assert_exact(out: Path, node) -> None:
    assert stored_rows(out) == node_rows(node, FIRST, LAST)
    assert_readers_see_no_duplicate(out)
    assert not list((out / STAGING_DIR).iterdir()), "everything staged was compacted"
    assert not [p for p in out.glob("**/*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("whole_group", [True, False], ids=["process-group", "supervisor-only"])
def test_sigkill_at_random_moments_then_resume_gives_exactly_the_nodes_logs(
    tmp_path, node, seeded, whole_group
):
    rng = random.Random(7 if whole_group else 8)
    with FaultProxy(node.url, Profile(latency_ms=(5, 15))) as proxy:
        for _ in range(5):  # 5 kill points per run of this test, 10 across both
            run = start(tmp_path, proxy.url)
            time.sleep(rng.uniform(0.8, 3.0))
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL) if whole_group else run.kill()
            run.wait()
            time.sleep(1.2)  # orphaned children notice the supervisor is gone within 1 s
            assert_readers_see_no_duplicate(tmp_path)
        final = start(tmp_path, proxy.url)
        assert final.wait(120) == 0, final.stderr.read().decode()
    assert_exact(tmp_path, node)


def test_sigint_finishes_in_flight_tasks_and_the_rerun_fetches_nothing_twice(
    tmp_path, node, seeded
):
    with FaultProxy(node.url, Profile(latency_ms=(20, 40))) as proxy:
        run = start(tmp_path, proxy.url, "--concurrency", "3")
        time.sleep(2.0)
        run.send_signal(signal.SIGINT)
        assert run.wait(60) == 130
        first = [(a, b) for a, b, outcome in proxy.stats()["get_logs"] if outcome == "ok"]
        rerun = start(tmp_path, proxy.url, "--concurrency", "3")
        assert rerun.wait(120) == 0, rerun.stderr.read().decode()
        fetched = [(a, b) for a, b, outcome in proxy.stats()["get_logs"] if outcome == "ok"]
    assert 0 < len(first) < len(fetched)
    blocks = [block for a, b in fetched for block in range(a, b + 1)]
    assert sorted(blocks) == list(range(FIRST, LAST + 1)), "each block fetched exactly once"
    assert_exact(tmp_path, node)


def test_resume_with_another_chunk_size_and_more_endpoints_gives_no_duplicate(
    tmp_path, node, seeded
):
    with FaultProxy(node.url, Profile(latency_ms=(10, 20))) as proxy:
        run = start(tmp_path, proxy.url)
        time.sleep(2.0)
        run.send_signal(signal.SIGINT)
        run.wait(60)
        more = ["--rpc", node.url, "--chunk-size", "37"]
        rerun = start(tmp_path, proxy.url, *more)
        assert rerun.wait(120) == 0, rerun.stderr.read().decode()
    assert_exact(tmp_path, node)


def test_extending_the_range_later_fetches_only_the_new_blocks(tmp_path, node, seeded):
    with FaultProxy(node.url) as proxy:
        first = backfill(tmp_path, [proxy.url], from_block=FIRST, to_block=900, chunk_size=100)
        assert first.exit_code == 0, first.message
        before = len(proxy.stats()["get_logs"])
        second = backfill(tmp_path, [proxy.url], from_block=FIRST, to_block=LAST, chunk_size=100)
        later = proxy.stats()["get_logs"][before:]
    assert second.exit_code == 0, second.message
    assert second.summary["already_stored_blocks"] == 900
    assert later and min(a for a, _, _ in later) == 901
    assert stored_rows(tmp_path) == node_rows(node, FIRST, LAST)


def test_killing_the_writer_mid_run_leaves_a_resumable_folder(tmp_path, node, seeded):
    events: list = []

    def report(event):
        events.append(event)
        if isinstance(event, ProcessStarted) and event.role == "writer":
            writer_pid.append(event.pid)

    writer_pid: list[int] = []
    with FaultProxy(node.url, Profile(latency_ms=(5, 10))) as proxy:
        import threading

        def kill_writer_soon():
            time.sleep(1.0)
            os.kill(writer_pid[0], signal.SIGKILL)

        threading.Thread(target=kill_writer_soon, daemon=True).start()
        broken = backfill(tmp_path, [proxy.url], report, from_block=FIRST, to_block=LAST,
                          chunk_size=20)  # fmt: skip
        assert broken.exit_code == 1 and "writer" in broken.message
        assert_readers_see_no_duplicate(tmp_path)
        again = backfill(tmp_path, [proxy.url], from_block=FIRST, to_block=LAST, chunk_size=20)
    assert again.exit_code == 0, again.message
    assert_exact(tmp_path, node)


@pytest.fixture
def small_node():
    """A node of its own (the shared one must not be reorganised under other tests)."""
    with Anvil(find_anvil(), prune_history=False) as anvil:
        seed_logs(anvil.url, blocks=120, logs=3000, seed=3)
        yield anvil


def test_a_reorg_at_the_last_end_is_detected_and_repaired_on_the_next_run(tmp_path, small_node):
    head = int(small_node.rpc("eth_blockNumber", []), 16)
    first = backfill(tmp_path, [small_node.url], from_block=0, to_block="latest")
    assert first.exit_code == 0, first.message
    stale = node_rows(small_node, 0, head)
    small_node.rpc("anvil_reorg", [5, []])  # the last 5 blocks are replaced by empty ones
    assert int(small_node.rpc("eth_blockNumber", []), 16) == head
    assert node_rows(small_node, 0, head) != stale
    notices: list = []
    second = backfill(tmp_path, [small_node.url], notices.append, from_block=0, to_block=head)
    assert second.exit_code == 0, second.message
    assert any("reorg" in getattr(e, "text", "") for e in notices)
    assert stored_rows(tmp_path) == node_rows(small_node, 0, head)


def test_a_full_disk_is_a_clear_error_and_the_folder_resumes_once_there_is_room(
    tmp_path, node, seeded
):
    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = mount / "out"
        full = backfill(out, [node.url], from_block=FIRST, to_block=LAST, chunk_size=50)
        assert full.exit_code == 1
        assert "No space left on device" in full.message
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        again = backfill(out, [node.url], from_block=FIRST, to_block=LAST, chunk_size=50)
        assert again.exit_code == 0, again.message
        assert_exact(out, node)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
