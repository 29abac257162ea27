"""Exactly-once output across crashes, against the real anvil node: SIGKILL the run while it
fetches, while it compacts and while it checks the end's block hashes (each moment found from
what the run does, never from a timer), resume, change the chunk size or the endpoints, extend
the range, reorg the chain, fill the disk; the Parquet output must always end up equal to the
node's logs, row for row."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from conftest import backfill, node_rows, stored_rows
from helpers import (
    assert_equals_node,
    assert_readers_see_no_duplicate,
    kill_at,
    run_cli,
    start_cli,
    wait_for,
)

from pipeline.dev.devnet import Anvil, find_anvil
from pipeline.dev.seeding import seed_logs
from pipeline.messages import ProcessStarted, TaskWritten
from pipeline.store.layout import LOGS_DIR, MANIFEST_FILE, STAGING_DIR
from pipeline.store.resume import TIP_BLOCKS

FIRST, LAST = 1, 1500
KILL_WAIT_S = 90  # generous: the machine is shared, and a cold forkserver takes a while
GROUP_GONE_S = 30  # orphans check for their supervisor every second
# Kills while fetching: after this many eth_getLogs of the attempt, each time with a fragment it
# staged on disk; three kills at three depths of the run. A supervisor killed alone leaves its
# workers fetching for up to a second: at ~25 tasks a second, 75 tasks leave room for three kills.
FETCH_KILL_DEPTHS = (1, 3, 6)
# Compaction and the end's hash check last a fraction of a second: a run that ends before the
# moment came is a miss, and the attempt is made again in a fresh folder.
MOMENT_ATTEMPTS = 3


Moment = Callable[[], object]


def cli_args(out: Path, url: str, *extra: str, first: int = FIRST, last: int = LAST) -> list[str]:
    """The backfill command line of these tests (small tasks, small files, quiet)."""
    args = ["backfill", "--rpc", url, "--from-block", str(first), "--to-block", str(last)]
    args += ["--output", str(out), "--chunk-size", "20", "--file-blocks", "300", "--quiet"]
    return [*args, *extra]


def start(out: Path, url: str, *extra: str, **blocks: int) -> subprocess.Popen:
    """The CLI as a user runs it, in its own process group so it can be killed whole."""
    return start_cli(*cli_args(out, url, *extra, **blocks))


def resume_to_the_end(out: Path, url: str, node, *extra: str, **blocks: int) -> None:
    """Run the same command again: it must complete, and the folder must equal the node."""
    rerun = run_cli(*cli_args(out, url, *extra, **blocks))
    assert rerun.returncode == 0, rerun.stderr
    first, last = blocks.get("first", FIRST), blocks.get("last", LAST)
    assert_equals_node(None, out, node, first, last)


def staged(out: Path) -> set[str]:
    """Names of the durable fragments in the staging folder now."""
    return {p.name for p in (out / STAGING_DIR).glob("frag__*.frag")}


def compacting(out: Path) -> bool:
    """A final file is being written: its temporary file exists."""
    return any((out / LOGS_DIR).glob(".logs__*.parquet.tmp"))


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def kill_when(run: subprocess.Popen, moment: Moment, what: str, whole_group: bool) -> bool:
    """SIGKILL the run (its group, or the supervisor alone) at `moment`; then wait until none of
    its processes is left (orphans end themselves). False if the run ended before the moment."""
    hit = kill_at(run, moment, what, KILL_WAIT_S, whole_group)
    wait_for(lambda: not group_members(run.pid), GROUP_GONE_S, f"the processes of {what} to end")
    stderr = run.stderr.read().decode() if run.stderr else ""
    if run.stderr:
        run.stderr.close()
    assert hit or run.returncode == 0, f"{what}: the run ended with {run.returncode}: {stderr}"
    return hit


KILLED_ALONE = [
    pytest.param(True, id="process-group"),
    pytest.param(False, id="supervisor-only", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("whole_group", KILLED_ALONE)
def test_sigkill_while_fetching_then_resume_gives_exactly_the_nodes_logs(
    tmp_path, node, seeded, proxy, whole_group
):
    fetching = proxy(latency_ms=(30, 50))
    hits = 0
    for depth in FETCH_KILL_DEPTHS:
        served_before = len(fetching.stats()["get_logs"])
        staged_before = staged(tmp_path)

        def moment(depth=depth, served_before=served_before, staged_before=staged_before):
            # This attempt's own work: requests served to it, a fragment it staged.
            served = len(fetching.stats()["get_logs"]) - served_before
            return served >= depth and staged(tmp_path) - staged_before

        run = start(tmp_path, fetching.url)
        hits += kill_when(run, moment, f"fetch kill after {depth} eth_getLogs", whole_group)
        assert_readers_see_no_duplicate(tmp_path)
    assert hits == len(FETCH_KILL_DEPTHS), "every kill landed while the run was fetching"
    resume_to_the_end(tmp_path, fetching.url, node)


@pytest.mark.slow
@pytest.mark.parametrize("whole_group", [True, False], ids=["process-group", "supervisor-only"])
def test_sigkill_while_compacting_then_resume_gives_exactly_the_nodes_logs(
    tmp_path, node, seeded, whole_group
):
    # 600 fragments of 5 blocks and one window for the whole range: the end's compaction merges
    # 60,000 rows and lasts long enough to be caught (about 0.1 s on an idle machine).
    blocks = {"first": seeded.first_block, "last": seeded.last_block}
    small_tasks = ("--chunk-size", "5", "--file-blocks", "100000")
    hits: list[bool] = []
    for attempt in range(MOMENT_ATTEMPTS):
        out = tmp_path / f"attempt-{attempt}"
        # The first kill lands in the end's compaction; the rerun has nothing left to fetch and
        # compacts what is staged as soon as its writer starts: the second kill lands there.
        # (A supervisor killed alone leaves its writer to finish that compaction, often in time:
        # then the rerun finds nothing, or only fragments the manifest covers, to compact.)
        for kill in ("the end's compaction", "the compaction of a resumed run"):
            run = start(out, node.url, *small_tasks, **blocks)
            hits.append(kill_when(run, lambda out=out: compacting(out), kill, whole_group))
            assert_readers_see_no_duplicate(out)
            if not hits[-1] or not staged(out):
                break
        resume_to_the_end(out, node.url, node, *small_tasks, **blocks)
        if any(hits):
            break
    print(f"compaction kills ({whole_group=}): {hits} (one per run: caught compacting?)")
    assert any(hits), "no run was caught while compacting"


@pytest.mark.slow
@pytest.mark.parametrize("whole_group", [True, False], ids=["process-group", "supervisor-only"])
def test_sigkill_during_the_end_hash_check_then_resume_fetches_nothing_again(
    tmp_path, node, seeded, proxy, whole_group
):
    # Latency on every request keeps the end's hash batch in flight for tens of milliseconds.
    slow = proxy(latency_ms=(40, 60))
    # Without the verifier: its header batches during the run would look like the end's check.
    wide_tasks = ("--chunk-size", "100", "--no-verify")
    # Blocks a reorg can still reach: only then is the end remembered by its hashes.
    blocks = {"first": seeded.last_block - (LAST - FIRST), "last": seeded.last_block}
    hits: list[bool] = []
    for attempt in range(MOMENT_ATTEMPTS):
        out = tmp_path / f"attempt-{attempt}"
        before = slow.stats()
        served_before = len(before["get_logs"])
        hashes_before = before["methods"].get("eth_getBlockByNumber", 0)

        def hash_check(served_before=served_before, hashes_before=hashes_before):
            # With a numbered --to-block the preflight asks for no block: a block asked for
            # after every task was served is the end's hash check.
            stats = slow.stats()
            served = [(a, b) for a, b, how in stats["get_logs"][served_before:] if how == "ok"]
            every_block = sum(b - a + 1 for a, b in served) >= LAST - FIRST + 1
            # The end's check asks for 32 hashes at once; one header alone is the timestamps'
            # sample check of an answer.
            hashes = stats["methods"].get("eth_getBlockByNumber", 0)
            return every_block and hashes > hashes_before + 1

        run = start(out, slow.url, *wide_tasks, **blocks)
        hits.append(kill_when(run, hash_check, "the end's hash check", whole_group))
        if hits[-1]:
            break
        assert_equals_node(None, out, node, blocks["first"], blocks["last"])
    print(f"hash-check kills ({whole_group=}): {hits} (one per run: caught checking?)")
    assert hits[-1], "no run was caught while checking the end's hashes"
    assert_readers_see_no_duplicate(out)
    served = len(slow.stats()["get_logs"])
    resume_to_the_end(out, slow.url, node, *wide_tasks, **blocks)
    assert len(slow.stats()["get_logs"]) == served, "every task was stored before the hash check"
    manifest = orjson.loads((out / MANIFEST_FILE).read_bytes())
    assert len(manifest["tip"]) == TIP_BLOCKS, "the resumed run recorded the end's hashes"


@pytest.mark.slow
def test_sigint_finishes_in_flight_tasks_and_the_rerun_fetches_nothing_twice(
    tmp_path, node, seeded, proxy
):
    steady = proxy(latency_ms=(20, 40))
    run = start(tmp_path, steady.url, "--concurrency", "3")
    wait_for(lambda: staged(tmp_path), KILL_WAIT_S, "the first staged fragment")
    run.send_signal(signal.SIGINT)
    assert run.wait(60) == 130, run.stderr.read().decode()
    run.stderr.close()
    first = [(a, b) for a, b, outcome in steady.stats()["get_logs"] if outcome == "ok"]
    resume_to_the_end(tmp_path, steady.url, node, "--concurrency", "3")
    fetched = [(a, b) for a, b, outcome in steady.stats()["get_logs"] if outcome == "ok"]
    assert 0 < len(first) < len(fetched)
    blocks = [block for a, b in fetched for block in range(a, b + 1)]
    assert sorted(blocks) == list(range(FIRST, LAST + 1)), "each block fetched exactly once"


@pytest.mark.slow
def test_resume_with_another_chunk_size_and_more_endpoints_gives_no_duplicate(
    tmp_path, node, seeded, proxy
):
    steady = proxy(latency_ms=(10, 20))
    run = start(tmp_path, steady.url)
    wait_for(lambda: staged(tmp_path), KILL_WAIT_S, "the first staged fragment")
    run.send_signal(signal.SIGINT)
    assert run.wait(60) == 130, run.stderr.read().decode()
    run.stderr.close()
    resume_to_the_end(tmp_path, steady.url, node, "--rpc", node.url, "--chunk-size", "37")


@pytest.mark.slow
def test_extending_the_range_later_fetches_only_the_new_blocks(tmp_path, node, seeded, proxy):
    counting = proxy()
    first = backfill(tmp_path, [counting.url], from_block=FIRST, to_block=900, chunk_size=100)
    assert first.exit_code == 0, first.message
    before = len(counting.stats()["get_logs"])
    second = backfill(tmp_path, [counting.url], from_block=FIRST, to_block=LAST, chunk_size=100)
    later = counting.stats()["get_logs"][before:]
    assert second.summary["already_stored_blocks"] == 900
    assert later and min(a for a, _, _ in later) == 901
    assert_equals_node(second, tmp_path, node, FIRST, LAST)


@pytest.mark.slow
def test_killing_the_writer_mid_run_leaves_a_resumable_folder(tmp_path, node, seeded, proxy):
    steady = proxy(latency_ms=(5, 10))
    writer: list[int] = []
    staged_at_kill: list[set[str]] = []

    def report(event):
        # Runs in the supervisor as events arrive: the kill follows the writer's first stored
        # task, with no timer (a cold forkserver may take seconds to start the writer).
        if isinstance(event, ProcessStarted) and event.role == "writer":
            writer.append(event.pid)
        if isinstance(event, TaskWritten) and writer and not staged_at_kill:
            staged_at_kill.append(staged(tmp_path))
            os.kill(writer[0], signal.SIGKILL)

    broken = backfill(tmp_path, [steady.url], report, from_block=FIRST, to_block=LAST,
                      chunk_size=20)  # fmt: skip
    assert staged_at_kill and staged_at_kill[0], "the writer was killed after staging a fragment"
    assert broken.exit_code == 1 and "writer" in broken.message, broken.message
    assert_readers_see_no_duplicate(tmp_path)
    again = backfill(tmp_path, [steady.url], from_block=FIRST, to_block=LAST, chunk_size=20)
    assert_equals_node(again, tmp_path, node, FIRST, LAST)


@pytest.fixture
def small_node():
    """A node of its own (the shared one must not be reorganised under other tests)."""
    with Anvil(find_anvil(), prune_history=False) as anvil:
        seed_logs(anvil.url, blocks=120, logs=3000, seed=3)
        yield anvil


@pytest.mark.slow
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


def test_a_run_that_ends_where_no_reorg_reaches_remembers_no_tip(tmp_path, small_node):
    head = int(small_node.rpc("eth_blockNumber", []), 16)
    first = backfill(tmp_path, [small_node.url], from_block=0, to_block="latest")
    assert first.exit_code == 0, first.message
    assert len(orjson.loads((tmp_path / MANIFEST_FILE).read_bytes())["tip"]) == TIP_BLOCKS
    small_node.rpc("anvil_mine", [hex(64)])  # anvil's finalized block is 64 below its head
    # The default end is the finalized block, the last one stored: nothing left to remember.
    second = backfill(tmp_path, [small_node.url], from_block=0)
    assert second.exit_code == 0 and second.summary["to_block"] == head, second.message
    assert orjson.loads((tmp_path / MANIFEST_FILE).read_bytes())["tip"] == {}
    assert stored_rows(tmp_path) == node_rows(small_node, 0, head)


@pytest.mark.slow
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
        assert_equals_node(again, out, node, FIRST, LAST)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
