"""Adaptive task sizes: without --chunk-size the plan sizes each task from the logs per block the
stored tasks showed (pipeline.plan.chunks), through the board's completions; with it, sizes are
pinned as before."""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable, Sequence

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config.options import FIRST_TASK_BLOCKS
from pipeline.config.settings import build_config
from pipeline.messages import Task
from pipeline.plan.board import TaskBoard
from pipeline.plan.chunks import (
    MAX_TASK_BLOCKS,
    REACH,
    TARGET_LOGS,
    ChunkPlan,
    round_size,
)

RPC = ["http://127.0.0.1:1"]
Density = Callable[[int], int]  # logs in one block


def stepped(*steps: tuple[int, int]) -> Density:
    """Logs per block by region: (first block of the region, logs in each of its blocks)."""
    starts = sorted(steps)

    def logs(block: int) -> int:
        return next(per for first, per in reversed(starts) if block >= first)

    return logs


def logs_in(density: Density, task: Task) -> int:
    return sum(density(block) for block in range(task.start, task.end + 1))


def drive(
    board: TaskBoard,
    density: Density,
    lag: int = 2,
    windows: Sequence[int | None] = (None,),
) -> list[tuple[Task, int]]:
    """Run the board to the end as workers would: each worker (one per window) claims a task
    before the writer has stored its previous one (`lag` tasks in flight), and every stored task
    reports its logs. Returns (task, logs) in the order stored."""
    workers = [f"w{i}#0" for i in range(len(windows))]
    in_flight: deque[Task] = deque()
    stored: list[tuple[Task, int]] = []
    for turn in itertools.count():
        worker, window = workers[turn % len(workers)], windows[turn % len(windows)]
        task = board.claim(worker, 0, max_blocks=window)
        if task is not None:
            assert window is None or task.blocks <= window  # the board cut it to the window
            in_flight.append(task)
        if in_flight and (len(in_flight) >= lag or task is None):
            done = in_flight.popleft()
            rows = logs_in(density, done)
            assert board.accept(done.task_id, rows)
            board.complete(done.task_id)
            stored.append((done, rows))
        if task is None and not in_flight and board.state().pending == 0:
            return stored
    raise AssertionError("unreachable")


def adaptive(start: int, end: int, endpoints: Sequence[str] = ("w0",)) -> TaskBoard:
    return TaskBoard(ChunkPlan(start, end), [*endpoints])


def widths_in(stored: list[tuple[Task, int]], lo: int, hi: int) -> list[int]:
    return [t.blocks for t, _ in stored if lo <= t.start and t.end <= hi]


def assert_covers_once(tasks: Sequence[Task], ranges: Sequence[tuple[int, int]]) -> None:
    ordered = sorted(tasks, key=lambda t: t.start)
    blocks = [b for t in ordered for b in range(t.start, t.end + 1)]
    assert blocks == [b for lo, hi in ranges for b in range(lo, hi + 1)]
    assert len({t.task_id for t in tasks}) == len(tasks)


# --- sizes follow the density -----------------------------------------------------------------


def test_dense_regions_get_small_tasks_and_sparse_ones_wide_tasks():
    def density(block: int) -> int:  # 200 logs a block, then 1 every 4 blocks, then 200 again
        return int(block % 4 == 0) if 20_000 <= block < 120_000 else 200

    stored = drive(adaptive(0, 199_999), density)
    inside = [(2_000, 19_999), (40_000, 119_999), (150_000, 199_999)]  # away from the changes
    dense = widths_in(stored, *inside[0]) + widths_in(stored, *inside[2])
    sparse = widths_in(stored, *inside[1])
    assert max(dense) <= round_size(TARGET_LOGS / 200)  # 50 blocks: 10,000 logs each
    assert min(sparse) >= 1_000 and max(sparse) == round_size(4 * TARGET_LOGS)  # 20,000
    # Where the density holds, every task holds at most the target.
    held = [rows for task, rows in stored if any(a <= task.start <= b for a, b in inside)]
    assert max(held) <= TARGET_LOGS


def test_an_empty_chain_gets_wide_tasks_up_to_the_largest_size():
    stored = drive(adaptive(0, 2_000_000), lambda block: 0)
    assert max(t.blocks for t, _ in stored) == MAX_TASK_BLOCKS
    assert len(stored) < 50  # against 20,001 tasks of the first guess


def test_a_block_denser_than_the_target_gets_one_block_tasks():
    stored = drive(adaptive(0, 9_999), lambda block: 3 * TARGET_LOGS)
    assert [t.blocks for t, _ in stored[-10:]] == [1] * 10


def test_the_first_task_is_the_first_guess_and_unmeasured_ones_halve():
    plan = ChunkPlan(0, 99_999)
    sizes = []
    for _ in range(6):
        sizes.append(plan.size())
        plan.take()
    assert sizes == [FIRST_TASK_BLOCKS, 50, 20, 10, 10, 10]  # nothing measured yet
    plan.learn(100, 100)  # 1 log a block: 10,000 wanted, at most REACH x 100 measured
    assert plan.size() == round_size(REACH * 100)


def test_tasks_end_on_a_multiple_of_their_size():
    stored = drive(adaptive(7, 345_678), stepped((0, 3), (50_000, 90), (200_000, 0)))
    sizes = {round_size(n) for n in range(1, MAX_TASK_BLOCKS + 1, 3)}
    for task, _ in stored[:-1]:
        # A task is cut at the next multiple of its size: only a first piece is shorter.
        assert any((task.end + 1) % s == 0 for s in sizes if s >= task.blocks), task


# --- the estimate ---------------------------------------------------------------------------------


def test_the_estimate_recovers_within_a_few_tasks_when_the_chain_turns_dense():
    plan = ChunkPlan(0, 10**9)
    for _ in range(10):
        plan.learn(10_000, 10_000)  # 1 log a block: tasks of 10,000 blocks
    assert plan.size() == 10_000
    plan.learn(10_000, 2_000_000)  # a wide task ran into 200 logs a block
    assert plan.size() <= 50  # at once: one measured task is enough to shrink
    for _ in range(3):
        plan.learn(50, 10_000)
    assert plan.size() == round_size(TARGET_LOGS / 200)


def test_the_estimate_widens_step_by_step_when_the_chain_turns_quiet():
    plan = ChunkPlan(0, 10**9)
    for _ in range(10):
        plan.learn(50, 10_000)  # 200 logs a block
    sizes = []
    for _ in range(12):
        size = plan.size()
        sizes.append(size)
        plan.learn(size, 0)  # an empty stretch
    # Never more than REACH times the blocks measured (~2x the last task's width) per step...
    assert all(b <= 2 * REACH * a for a, b in itertools.pairwise(sizes)), sizes
    # ... yet the widest size within a dozen tasks.
    assert sizes[-1] == MAX_TASK_BLOCKS, sizes


def test_one_empty_task_in_a_dense_region_does_not_make_a_giant_task():
    plan = ChunkPlan(0, 10**9)
    for _ in range(10):
        plan.learn(50, 10_000)
    plan.learn(50, 0)
    assert plan.size() <= 2 * 50


# --- coverage, windows, heads -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_tasks_cover_every_range_once_whatever_the_density_and_windows(seed):
    rng = random.Random(seed)
    ranges, lo = [], rng.randrange(0, 5_000)
    for _ in range(rng.randint(1, 4)):  # the gaps a resumed run fills
        hi = lo + rng.randrange(0, 30_000)
        ranges.append((lo, hi))
        lo = hi + 2 + rng.randrange(0, 10_000)
    steps = [(rng.randrange(0, lo), rng.choice((0, 0, 1, 5, 40, 300, 5_000))) for _ in range(6)]
    density = stepped((0, rng.choice((0, 2, 100))), *steps)
    windows = [rng.choice((None, None, 1, 7, 100, 2_500)) for _ in range(rng.randint(1, 3))]
    board = TaskBoard(ChunkPlan.over(ranges), [f"w{i}" for i in range(len(windows))])
    stored = drive(board, density, lag=rng.randint(1, 4), windows=windows)
    assert_covers_once([t for t, _ in stored], ranges)
    assert board.state().done == len(stored) and board.state().pending == 0


def test_a_claim_is_cut_to_the_window_and_head_even_when_the_plan_wants_wide_tasks():
    plan = ChunkPlan(0, 10**6)
    for _ in range(10):
        plan.learn(MAX_TASK_BLOCKS, 0)
    assert plan.size() == MAX_TASK_BLOCKS
    board = TaskBoard(plan, ["a", "b"])
    small = board.claim("a#0", 0, max_blocks=300)
    assert (small.start, small.end) == (0, 299)
    headed = board.claim("a#0", 0, max_blocks=300, max_end=450)
    assert (headed.start, headed.end) == (300, 450)
    wide = board.claim("b#0", 0)  # no window: the rest of the plan's task
    assert (wide.start, wide.end) == (451, MAX_TASK_BLOCKS - 1)


def test_remaining_is_zero_only_when_nothing_is_left():
    plan = ChunkPlan.over([(0, 9), (100, 100_000)])
    taken = []
    while plan.remaining():
        taken.append(plan.take())
        plan.learn(taken[-1].blocks, 0)
    assert plan.take() is None and taken[-1].end == 100_000


# --- pinned sizes and the option ----------------------------------------------------------------


def test_an_explicit_chunk_size_pins_every_task_whatever_the_density():
    board = TaskBoard(ChunkPlan(5, 9_999, 300), ["w0"])
    stored = drive(board, stepped((0, 0), (4_000, 10_000)))
    widths = [t.blocks for t, _ in stored]
    assert widths[0] == 295 and widths[-1] == 9_999 - 9_900 + 1
    assert set(widths[1:-1]) == {300}
    assert all(t.start % 300 == 0 for t, _ in stored[1:])


def test_build_config_pins_the_size_and_the_default_is_adaptive():
    assert build_config(rpc=RPC).chunk_size is None
    assert build_config(rpc=RPC, chunk_size=250).chunk_size == 250
    assert ChunkPlan.over([(0, 9)], None).adaptive
    assert not ChunkPlan.over([(0, 9)], 250).adaptive


def test_help_says_the_default_is_adaptive_from_the_first_guess():
    text = " ".join(CliRunner().invoke(cli, ["backfill", "--help"]).output.split())
    assert f"default: adaptive, starting at {FIRST_TASK_BLOCKS}" in text


def test_round_sizes_divide_the_default_file_window():
    sizes = {round_size(n) for n in range(1, 200_000)}
    assert sizes == {1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000,
                     50_000, 100_000}  # fmt: skip
    assert all(100_000 % size == 0 for size in sizes)
    assert round_size(0.3) == 1 and round_size(999) == 500 and round_size(1_000) == 1_000
