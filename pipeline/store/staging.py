"""Staging: the fragments of this run by aligned window of --file-blocks blocks, and their
compaction into final files once a window is complete (or at the end of a run). Each
compaction is recorded in the manifest before its fragments are deleted."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.fetch.convert import log_schema
from pipeline.plan.chunks import Run, Runs
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
from pipeline.store.layout import LOGS_DIR, fragment_path, log_file_name
from pipeline.store.manifest import Manifest, file_keys, save_manifest
from pipeline.store.target import LocalStore, Store, as_store

# A final file holds at most about this many rows (~50 MB). A contiguous run of fragments that
# reaches it is compacted at once, even in a window still being fetched: the end of a run then
# has at most about this many rows left to write (~0.2 s), not a whole window's (0.44 s for 1M).
MAX_FILE_ROWS = 500_000
# ... and a run of this many fragments too, however few rows they hold: compacting them costs
# ~0.3 ms each, and the end of a run of 16 endpoints' 1,600 small answers waited ~0.5 s for it.
MAX_RUN_FRAGMENTS = 512


class Compacted(NamedTuple):
    """A compaction of this run: its window, its final file (None: blocks without logs, only
    recorded as covered) and blocks, and its fragments (lo, hi, rows, the endpoint that
    fetched them)."""

    window: int
    name: str | None
    start: int
    end: int
    fragments: tuple[tuple[int, int, int, str], ...]


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
        fingerprints: Mapping[str, str] | None = None,
        reopens: bool = True,
    ) -> None:
        self.out = out  # the staging folder
        self.store = store or LocalStore(out)  # where final files go
        self.manifest = manifest
        self.file_blocks = file_blocks
        self.events = events
        self.fragments: dict[int, list[tuple[int, int, int]]] = defaultdict(list)  # lo, hi, rows
        self.runs: dict[int, Runs] = defaultdict(Runs)  # the contiguous runs of the fragments
        self.missing: dict[int, int] = defaultdict(int)
        self.sources: dict[tuple[int, int], str] = {}  # fragment -> the endpoint that fetched it
        # This run's compactions of fragments whose endpoint is known, kept when the checks may
        # take an endpoint's files back (`reopens`).
        self.compacted: list[Compacted] = []
        self.reopens = reopens
        self.fingerprints = dict(fingerprints or {})  # endpoint name -> its id across runs
        for start, end in todo:
            for window, lo, hi in _windows(start, end, file_blocks):
                self.missing[window] += hi - lo + 1
        for start, end in staged:
            # A fragment staged with another --file-blocks may cross a window: it is filed under
            # the window it starts in, and its file may then cross too (names stay disjoint).
            rows = fragment_rows(fragment_path(out, start, end))
            self._file(start // file_blocks, (start, end, rows))

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
            run = self._file(window, (lo, hi, count))
            self.sources[lo, hi] = endpoint
            self.missing[window] -= hi - lo + 1
            if self.missing[window] <= 0:
                self._compact(window)
            elif run.rows >= MAX_FILE_ROWS or run.fragments >= MAX_RUN_FRAGMENTS:
                self._compact_run(window, run.start, run.end)

    def _file(self, window: int, fragment: tuple[int, int, int]) -> Run:
        """Note a staged fragment (lo, hi, rows) of `window`; the run it joins."""
        self.fragments[window].append(fragment)
        return self.runs[window].add(*fragment)

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
            self.runs[window] = Runs.of(keep)
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
        self.runs.pop(window, None)
        for group in _groups(sorted(self.fragments.pop(window, []))):
            self._commit(window, group)

    def _compact_run(self, window: int, start: int, end: int) -> None:
        """Compact the run of `window`'s fragments from `start` to `end` into one file."""
        fragments = self.fragments[window]
        self.fragments[window] = [f for f in fragments if f[1] < start or f[0] > end]
        self.runs[window].remove(start)
        self._commit(window, sorted(f for f in fragments if start <= f[0] and f[1] <= end))

    def _commit(self, window: int, group: list[tuple[int, int, int]]) -> None:
        """Make contiguous fragments (lo, hi, rows) one final file, or a covered range without
        logs; record it, then delete them."""
        start, end = group[0][0], group[-1][1]
        paths = [fragment_path(self.out, a, b) for a, b, _ in group]
        rows = sum(count for _, _, count in group)
        fetched = tuple((lo, hi, n, self.sources.pop((lo, hi), "")) for lo, hi, n in group)
        by = sorted({self.fingerprints[s] for *_, s in fetched if s in self.fingerprints})
        if rows:
            commit_window(self.store, self.manifest, self.events, start, end, rows, paths, by)
        else:  # no logs there: nothing to read, only the coverage to record
            self.manifest.add(start, end, None, 0, fetched_by=by)
            save_manifest(self.store, self.manifest)
        for fragment in paths:  # the record first, then the cleanup
            fragment.unlink()
        if self.reopens and any(source for *_, source in fetched):  # a liar may be among them
            name = log_file_name(start, end) if rows else None
            self.compacted.append(Compacted(window, name, start, end, fetched))

    def reopen_from(self, endpoint: str) -> list[tuple[int, int, int]]:
        """Take back this run's final files that hold ranges `endpoint` fetched: each file is
        forgotten first (cut short after that, a resume deletes the file the manifest no longer
        lists and fetches its blocks again), its other ranges are staged again from its rows,
        then it is deleted; its window waits again for `endpoint`'s ranges, which are returned
        (start, end, rows)."""
        reopened = []
        for done in [c for c in self.compacted if any(f[3] == endpoint for f in c.fragments)]:
            self.compacted.remove(done)
            table = self._final_rows(done.name)
            keys = []  # the file and its event files (none for blocks without logs)
            if done.name:
                keys = file_keys(done.name, self.manifest.drop_file(done.name))
            else:
                self.manifest.drop_range(done.start, done.end)
            save_manifest(self.store, self.manifest)
            for lo, hi, rows, source in done.fragments:
                if source == endpoint:
                    reopened.append((lo, hi, rows))
                    self.missing[done.window] += hi - lo + 1
                    continue
                part = _rows_between(table, lo, hi)
                write_fragment(part, self.out, lo, hi)
                self._file(done.window, (lo, hi, part.num_rows))
                self.sources[lo, hi] = source
            for key in keys:
                self.store.delete(key)
        return sorted(reopened)

    def reopen_earlier(self, endpoint: str) -> list[tuple[int, int, int]]:
        """Take back what earlier runs stored that `endpoint` had a part in (the manifest's
        fetched_by, by fingerprint; after reopen_from, only earlier runs' entries hold this
        run's suspect): each final file or range without logs is forgotten, then deleted, and
        its blocks (start, end, rows) returned to be fetched again whole."""
        fingerprint = self.fingerprints.get(endpoint)
        listed = self.manifest.files.items()
        files = [name for name, e in listed if fingerprint in e.get("fetched_by", ())]
        empty = [e for e in self.manifest.empty if fingerprint in e["fetched_by"]]
        keys, reopened = [], []
        for name in files:
            entry = self.manifest.drop_file(name)
            keys += file_keys(name, entry)
            reopened.append((entry["from_block"], entry["to_block"], entry["rows"]))
        for entry in empty:
            self.manifest.drop_range(entry["from_block"], entry["to_block"])
            reopened.append((entry["from_block"], entry["to_block"], 0))
        if reopened:
            save_manifest(self.store, self.manifest)
        for key in keys:
            self.store.delete(key)
        for start, end, _ in reopened:
            for window, lo, hi in _windows(start, end, self.file_blocks):
                self.missing[window] += hi - lo + 1
        return reopened

    def _final_rows(self, name: str | None) -> pa.Table:
        """The rows of a final file of this run, as a fragment holds them (Parquet has no unit
        of seconds: block_timestamp is cast back); no rows when there is no file."""
        schema = log_schema(self.manifest.hex_output)
        if name is None:
            return schema.empty_table()
        data = self.store.read(f"{LOGS_DIR}/{name}")
        if data is None:
            raise OSError(f"{LOGS_DIR}/{name} is gone")
        return pq.read_table(pa.BufferReader(data)).cast(schema)


def commit_window(
    out: Path | Store,
    manifest: Manifest,
    events: tuple[EventOutput, ...],
    start: int,
    end: int,
    rows: int,
    sources: list[Path] | None = None,
    fetched_by: list[str] | None = None,
    schema: pa.Schema | None = None,
) -> None:
    """Write the final file of blocks start..end from `sources` (or an empty one of `schema`),
    each event's decoded file beside it, then record them all in the manifest at once, with
    the fingerprints of the endpoints that fetched them."""
    out = as_store(out)
    raw_schema = fragment_schema(sources[0]) if sources else schema
    window = WindowEvents(out, events, start, end, raw_schema, manifest.hex_output)
    with window:
        if sources:
            path = compact(sources, out, start, end, on_group=window.add)
        else:
            path = write_empty(raw_schema, out, start, end)
    manifest.add(start, end, path.name, rows, window.entries, fetched_by)
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
