"""Writer process: the single consumer of the result queue.

Workers leave each result as a file and queue only its name, so the data never passes through
the queue process. The writer makes an accepted result a durable fragment (so a finished range
never lives only in memory), then the task is complete. Fragments are compacted into final files
per aligned window of --file-blocks blocks once the whole window is staged, and whatever is left
at the end of a run; each compaction is recorded in the manifest before its fragments are
deleted.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

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
from pipeline.store.events import EventOutput, WindowEvents
from pipeline.store.files import (
    compact,
    fragment_rows,
    fragment_schema,
    read_fragment,
    stage_result,
    write_empty,
    write_fragment,
)
from pipeline.store.layout import fragment_path, writer_crash_log
from pipeline.store.locks import writer_lock
from pipeline.store.manifest import Manifest, save_manifest
from pipeline.store.target import LocalStore, Store, as_store
from pipeline.store.uri import scrub

MAX_FILE_ROWS = 2_000_000  # ... and hold at most about this many rows
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
            events.put(WriterFailed(f"cannot write to {shown}: {scrub(str(exc.strerror or exc))}"))


def store_batch(batch: FetchedBatch, staging: Staging, board: TaskBoard) -> TaskWritten | None:
    """Stage one batch unless its task was stored already or replaced by pieces (a dead
    worker's task fetched twice, or cut after the worker died holding it)."""
    task, result = batch.task, Path(batch.path)
    if not board.accept(task.task_id, batch.rows):
        result.unlink(missing_ok=True)
        return None
    staging.add(result, task.start, task.end, batch.rows)
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
        """Drop what the endpoint fetched that is staged but not in a final file yet, and put
        those ranges back on the board for the others."""
        for start, end, rows in self.staging.drop_from(order.endpoint):
            self.board.reopen(start, end, order.endpoint, order.reason)
            self.events.put(Unstaged(order.endpoint, start, end, rows))


class Staging:
    """Fragments by window, and how many blocks of each window this run has still to stage."""

    def __init__(
        self,
        out: Path,
        manifest: Manifest,
        todo: tuple[tuple[int, int], ...],
        staged: tuple[tuple[int, int], ...],
        file_blocks: int,
        events: tuple[EventOutput, ...] = (),
        store: Store | None = None,
    ) -> None:
        self.out = out  # the staging folder
        self.store = store or LocalStore(out)  # where final files go
        self.manifest = manifest
        self.file_blocks = file_blocks
        self.events = events
        self.fragments: dict[int, list[tuple[int, int, int]]] = defaultdict(list)  # lo, hi, rows
        self.missing: dict[int, int] = defaultdict(int)
        self.sources: dict[tuple[int, int], str] = {}  # fragment -> the endpoint that fetched it
        for start, end in todo:
            for window, lo, hi in _windows(start, end, file_blocks):
                self.missing[window] += hi - lo + 1
        for start, end in staged:
            # A fragment staged with another --file-blocks may cross a window: it is filed under
            # the window it starts in, and its file may then cross too (names stay disjoint).
            rows = fragment_rows(fragment_path(out, start, end))
            self.fragments[start // file_blocks].append((start, end, rows))

    def add(self, result: Path, start: int, end: int, rows: int, endpoint: str = "") -> None:
        """Stage a worker's result of blocks start..end (`rows` logs, fetched from `endpoint`)
        durably; compact full windows."""
        windows = list(_windows(start, end, self.file_blocks))
        if len(windows) == 1:
            stage_result(result, self.out, start, end)
            counts = [rows]
        else:  # one fragment per window, so that each window compacts on its own
            table = read_fragment(result)
            parts = [_rows_between(table, lo, hi) for _, lo, hi in windows]
            for part, (_, lo, hi) in zip(parts, windows, strict=True):
                write_fragment(part, self.out, lo, hi)
            counts = [part.num_rows for part in parts]
            result.unlink()
        for (window, lo, hi), count in zip(windows, counts, strict=True):
            self.fragments[window].append((lo, hi, count))
            self.sources[lo, hi] = endpoint
            self.missing[window] -= hi - lo + 1
            if self.missing[window] <= 0:
                self._compact(window)

    def drop_from(self, endpoint: str) -> list[tuple[int, int, int]]:
        """Delete the staged fragments `endpoint` fetched; their (start, end, rows)."""
        dropped = []
        for window, fragments in self.fragments.items():
            keep = [f for f in fragments if self.sources.get(f[:2]) != endpoint]
            for lo, hi, rows in (f for f in fragments if f not in keep):
                fragment_path(self.out, lo, hi).unlink(missing_ok=True)
                del self.sources[lo, hi]
                self.missing[window] += hi - lo + 1
                dropped.append((lo, hi, rows))
            fragments[:] = keep
        return sorted(dropped)

    def compact_ready(self) -> None:
        """Compact windows an earlier run staged completely (nothing left to fetch there)."""
        for window in [w for w in self.fragments if self.missing.get(w, 0) <= 0]:
            self._compact(window)

    def compact_all(self) -> None:
        """At the end of a run: move everything staged into final files."""
        for window in list(self.fragments):
            self._compact(window)

    def _compact(self, window: int) -> None:
        fragments = sorted(self.fragments.pop(window, []))
        for group in _groups(fragments):
            start, end = group[0][0], group[-1][1]
            paths = [fragment_path(self.out, a, b) for a, b, _ in group]
            rows = sum(count for _, _, count in group)
            if rows:
                commit_window(self.store, self.manifest, self.events, start, end, rows, paths)
            else:  # no logs there: nothing to read, only the coverage to record
                self.manifest.add(start, end, None, 0)
                save_manifest(self.store, self.manifest)
            for fragment in paths:  # the record first, then the cleanup
                fragment.unlink()
            for lo, hi, _ in group:
                self.sources.pop((lo, hi), None)


def commit_window(
    out: Path | Store,
    manifest: Manifest,
    events: tuple[EventOutput, ...],
    start: int,
    end: int,
    rows: int,
    sources: list[Path] | None = None,
    schema: pa.Schema | None = None,
) -> None:
    """Write the final file of blocks start..end from `sources` (or an empty one of `schema`),
    each event's decoded file beside it, then record them all in the manifest at once."""
    out = as_store(out)
    raw_schema = fragment_schema(sources[0]) if sources else schema
    window = WindowEvents(out, events, start, end, raw_schema, manifest.hex_output)
    with window:
        if sources:
            path = compact(sources, out, start, end, on_group=window.add)
        else:
            path = write_empty(raw_schema, out, start, end)
    manifest.add(start, end, path.name, rows, window.entries)
    save_manifest(out, manifest)


def _windows(start: int, end: int, size: int):
    """(window, lo, hi) for each `size`-block window that start..end touches."""
    lo = start
    while lo <= end:
        hi = min(end, (lo // size + 1) * size - 1)
        yield lo // size, lo, hi
        lo = hi + 1


def _rows_between(table: pa.Table, lo: int, hi: int) -> pa.Table:
    blocks = table["block_number"]
    return table.filter(pc.and_(pc.greater_equal(blocks, lo), pc.less_equal(blocks, hi)))


def _groups(fragments: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
    """Contiguous runs of fragments (lo, hi, rows), cut where a run would pass MAX_FILE_ROWS."""
    groups: list[list[tuple[int, int, int]]] = []
    rows = 0
    for start, end, count in fragments:
        contiguous = groups and groups[-1][-1][1] + 1 == start
        if contiguous and rows + count <= MAX_FILE_ROWS:
            groups[-1].append((start, end, count))
            rows += count
        else:
            groups.append([(start, end, count)])
            rows = count
    return groups
