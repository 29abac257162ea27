"""End to end, with default flags (no --chunk-size): task sizes follow the logs per block the run
measures, on the seeded node (60,000 logs over 3,000 blocks, uneven), and the output is the
node's."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from conftest import backfill, plan_tasks
from helpers import assert_equals_node

from pipeline.config.options import FIRST_TASK_BLOCKS
from pipeline.messages import TaskWritten
from pipeline.plan.chunks import TARGET_LOGS
from pipeline.run.api import RunResult


def run(output: Path, node, seeded, **filters) -> tuple[RunResult, list[TaskWritten]]:
    """A default-flags backfill of the seeded blocks; the tasks it stored, in block order."""
    written: list[TaskWritten] = []

    def report(event: object) -> None:
        if isinstance(event, TaskWritten):
            written.append(event)

    result = backfill(
        output,
        [node.url],
        report=report,
        from_block=seeded.first_block,
        to_block=seeded.last_block,
        **filters,
    )
    assert_equals_node(result, output, node, seeded.first_block, seeded.last_block, **filters)
    return result, sorted(written, key=lambda event: event.task.start)


@pytest.mark.slow
def test_default_flags_give_dense_ranges_narrow_tasks_and_sparse_ones_wide_tasks(
    tmp_path, node, seeded
):
    every, dense = run(tmp_path / "every", node, seeded)
    # One emitter of five: about a fifth of the logs per block over the same blocks.
    one, sparse = run(tmp_path / "one", node, seeded, addresses=[seeded.contracts[0]])
    assert one.summary["logs"] < every.summary["logs"] / 2

    widths = {"dense": [e.task.blocks for e in dense], "sparse": [e.task.blocks for e in sparse]}
    # The first task is the first guess; the tasks after it are sized from what was measured: of
    # several sizes, wider than the guess on this chain, fewer than the guess would make, and
    # holding about the target each.
    first = dense[0].task
    assert first.end == (first.start // FIRST_TASK_BLOCKS + 1) * FIRST_TASK_BLOCKS - 1, widths
    assert first.start == seeded.first_block
    pinned = plan_tasks(seeded.first_block, seeded.last_block, FIRST_TASK_BLOCKS)
    assert len(dense) < len(pinned), widths
    assert max(widths["dense"][1:]) > FIRST_TASK_BLOCKS, widths
    assert len(set(widths["dense"])) >= 3, widths
    assert statistics.median(e.logs for e in dense[1:]) <= TARGET_LOGS, widths
    # Where the logs are sparser, the tasks after the first guess are wider, and fewer.
    assert max(widths["sparse"][1:]) > max(widths["dense"][1:]), widths
    assert len(sparse) < len(dense), widths
