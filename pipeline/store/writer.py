"""Writer process: the single consumer of the result queue.

Workers leave each result as a file and queue only its name, so the data never passes through
the queue process. The writer makes an accepted result a durable fragment (so a finished range
never lives only in memory), then the task is complete; store.staging compacts the fragments
into final files.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from pipeline.messages import (
    Distrust,
    EventQueue,
    FetchedBatch,
    Held,
    ResultQueue,
    TaskWritten,
    Unstaged,
    Verdict,
    WriterFailed,
)
from pipeline.plan.board import QUEUE_GONE, TaskBoard
from pipeline.store.events import EventOutput
from pipeline.store.layout import writer_crash_log
from pipeline.store.locks import writer_lock
from pipeline.store.manifest import Manifest
from pipeline.store.staging import Staging
from pipeline.store.target import Store
from pipeline.store.uri import scrub

EXIT_CRASHED = 70  # as a crashed worker: the traceback is in the output folder's crash log


@dataclass(frozen=True)
class WriterSpec:
    """What the writer process needs to know."""

    output: Path  # the local folder: staging (and the final files, unless `store` says)
    manifest: Manifest
    todo: tuple[tuple[int, int], ...]  # the block ranges this run fetches
    staged: tuple[tuple[int, int], ...]  # fragments an earlier run left, reused
    file_blocks: int  # final files never cross a multiple of this: stable names across runs
    events: tuple[EventOutput, ...] = ()  # decoded beside every final file
    store: Store | None = None  # where final files and the manifest go (None: `output`)
    # Hold each batch until the verifier's Verdict (pipeline.verify); a rejected task counts as
    # an attempt, and fails after max_attempts.
    verify: bool = False
    max_attempts: int = 10
    # Endpoint name -> fingerprint (config.endpoints): the manifest records who fetched what.
    fingerprints: tuple[tuple[str, str], ...] = ()


def writer_main(
    spec: WriterSpec, board: TaskBoard, results: ResultQueue, events: EventQueue
) -> None:
    """Store batches until a None arrives, then compact what is staged and stop. A crash
    leaves its traceback in the crash log and exits EXIT_CRASHED, printing nothing: the
    supervisor's one line names the log."""
    try:
        _store_until_done(spec, board, results, events)
    except Exception:
        _save_traceback(spec.output)
        raise SystemExit(EXIT_CRASHED) from None


def _save_traceback(out: Path) -> None:
    text = scrub(traceback.format_exc())  # an object store's errors may quote credentials
    path = writer_crash_log(out, os.getpid())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as log:
            log.write(f"writer (pid {os.getpid()}) crashed at {time.ctime()}\n{text}")
    except OSError as exc:
        last = text.strip().splitlines()[-1]
        print(f"writer crashed: {last} (cannot write {path}: {exc.strerror})", file=sys.stderr)


def _store_until_done(
    spec: WriterSpec, board: TaskBoard, results: ResultQueue, events: EventQueue
) -> None:
    staging = Staging(
        spec.output,
        spec.manifest,
        spec.todo,
        spec.staged,
        spec.file_blocks,
        spec.events,
        spec.store,
        dict(spec.fingerprints),
        reopens=spec.verify,
    )
    shown = staging.store.uri
    # The lock lets the next run wait for this process if its supervisor is killed.
    with writer_lock(spec.output), contextlib.suppress(*QUEUE_GONE):
        try:
            staging.compact_ready()
            held = Holding(spec, staging, board, events)
            while (item := results.get()) is not None:
                match item:
                    case FetchedBatch() if spec.verify:
                        held.hold(item)
                    case FetchedBatch():
                        written = store_batch(item, staging, board)
                        if written is not None:
                            events.put(written)
                    case Verdict():
                        held.settle(item)
                    case Distrust():
                        held.distrust(item)
            staging.compact_all()
        except OSError as exc:
            if _queue_gone(board):  # not the store's fault: the supervisor names the cause
                return
            events.put(WriterFailed(f"cannot write to {shown}: {scrub(str(exc.strerror or exc))}"))


def _queue_gone(board: TaskBoard) -> bool:
    """Whether the queue process has died (a call to it fails as an OSError too: a reset
    connection, a socket file removed)."""
    try:
        board.closed()
    except QUEUE_GONE:
        return True
    return False


def store_batch(batch: FetchedBatch, staging: Staging, board: TaskBoard) -> TaskWritten | None:
    """Stage one batch unless its task was stored already or replaced by pieces (a dead
    worker's task fetched twice, or cut after the worker died holding it)."""
    task, result = batch.task, Path(batch.path)
    if not board.accept(task.task_id, batch.rows):
        result.unlink(missing_ok=True)
        return None
    staging.add(result, task.start, task.end, batch.rows, batch.endpoint)
    board.complete(task.task_id)
    return TaskWritten(task, batch.endpoint, batch.rows)


class Holding:
    """Accepted batches waiting for the verifier's verdict; the verdicts and distrusts."""

    def __init__(
        self, spec: WriterSpec, staging: Staging, board: TaskBoard, events: EventQueue
    ) -> None:
        self.spec, self.staging, self.board, self.events = spec, staging, board, events
        self.batches: dict[int, FetchedBatch] = {}

    def hold(self, batch: FetchedBatch) -> None:
        """Take the batch off the board (nobody else fetches it) and ask for its checks."""
        if not self.board.accept(batch.task.task_id, batch.rows):
            Path(batch.path).unlink(missing_ok=True)
            return
        self.batches[batch.task.task_id] = batch
        self.events.put(Held(batch))

    def settle(self, verdict: Verdict) -> None:
        """Stage a batch that passed its checks; drop one that failed and hand its task back."""
        batch = self.batches.pop(verdict.task_id, None)
        if batch is None:
            return
        task = batch.task
        if verdict.ok:
            self.staging.add(Path(batch.path), task.start, task.end, batch.rows, batch.endpoint)
            self.board.complete(task.task_id)
            self.events.put(TaskWritten(task, batch.endpoint, batch.rows))
            return
        Path(batch.path).unlink(missing_ok=True)
        self.board.reject(task.task_id, verdict.liar, verdict.reason, self.spec.max_attempts)

    def distrust(self, order: Distrust) -> None:
        """Drop what the endpoint fetched, staged or in a final file of this run or an earlier
        one, and put those ranges back on the board for the others."""
        name = order.endpoint
        # Its answers still waiting for a verdict too: a check that began before the strike
        # may pass one (a sampled check), and its verdict would come after this order.
        for batch in [b for b in self.batches.values() if b.endpoint == name]:
            del self.batches[batch.task.task_id]
            Path(batch.path).unlink(missing_ok=True)
            self.board.reject(batch.task.task_id, name, order.reason, max_attempts=None)
        this_run = self.staging.drop_from(name) + self.staging.reopen_from(name)
        taken = [(r, False) for r in this_run]
        taken += [(r, True) for r in self.staging.reopen_earlier(name)]
        for (start, end, rows), earlier in taken:
            self.board.reopen(start, end, name, order.reason)
            self.events.put(Unstaged(name, start, end, rows, earlier=earlier))
