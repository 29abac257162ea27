"""Writer process: the single consumer of the result queue; stores each task as Parquet."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from .lifecycle import init_child
from .messages import FetchedBatch, TaskWritten, WriterFailed
from .storage import write_logs
from .taskqueue import QUEUE_GONE


@dataclass(frozen=True)
class WriterSpec:
    """What the writer process needs to know."""

    output: Path
    supervisor_pid: int


def writer_main(spec: WriterSpec, board, results, events) -> None:
    """Store batches until a None arrives; a task is complete only once its file is on disk."""
    init_child(spec.supervisor_pid)
    with contextlib.suppress(*QUEUE_GONE):  # the supervisor reports a lost queue itself
        while (batch := results.get()) is not None:
            try:
                written = store_batch(batch, spec.output, board)
            except QUEUE_GONE:
                raise
            except OSError as exc:
                events.put(WriterFailed(f"cannot write to {spec.output}: {exc.strerror or exc}"))
                return
            if written is not None:
                events.put(written)


def store_batch(batch: FetchedBatch, output: Path, board) -> TaskWritten | None:
    """Write one batch unless its task was stored already or replaced by pieces (a dead
    worker's task fetched twice, or cut after the worker died holding it)."""
    task = batch.task
    if not board.accept(task.task_id):
        return None
    path = write_logs(batch.table, output, task.start, task.end) if batch.table.num_rows else None
    board.complete(task.task_id)
    return TaskWritten(task, batch.endpoint, batch.table.num_rows, str(path or ""))
