"""Exporter: files that appear atomically and durably under their final name.

Every file is written under a hidden temporary name, fsynced, renamed, and its folder fsynced,
so after a crash at any instant a file is either complete or absent. Fragments are uncompressed
Arrow IPC (writing and reading them is a memory copy); final files are Parquet with zstd.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.fetch.convert import in_log_order
from pipeline.store.atomic import atomic_path, publish
from pipeline.store.layout import LOGS_DIR, fragment_path, log_file_name
from pipeline.store.target import Store, as_store

RowGroupHook = Callable[[pa.Table], None] | None
ROW_GROUP_ROWS = 128 * 1024  # big enough to scan fast, small enough for readers' memory
COMPRESSION = "zstd"
# Min/max statistics where they let a reader skip row groups (rows are in block order); on
# hashes, topics 1-3 and data they prune nothing and took a fifth of the write time.
STATISTICS = ("block_number", "block_timestamp", "transaction_index", "log_index", "address",
              "topic0", "chain_id")  # fmt: skip
# Dictionary pages everywhere but `data`, whose values hardly repeat: the attempt cost time and
# the pages it gave up on cost space.
PLAIN = ("data",)


def write_result(table: pa.Table, path: Path) -> None:
    """A worker's result for the writer: sorted, Arrow IPC (no encoding, no compression); not
    yet durable (stage_result makes it so)."""
    if table.num_rows:
        table, _ = in_log_order(table)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def stage_result(result: Path, out_dir: Path, start: int, end: int) -> Path:
    """Make a worker's result of blocks start..end a durable fragment; return its path."""
    return publish(result, fragment_path(out_dir, start, end))


def write_fragment(table: pa.Table, out_dir: Path, start: int, end: int) -> Path:
    """Stage the logs of blocks start..end (sorted) as a durable fragment; return its path."""
    path = fragment_path(out_dir, start, end)
    with atomic_path(path) as tmp:
        write_result(table, tmp)
    return path


def read_fragment(path: Path) -> pa.Table:
    """A staged fragment's logs (memory-mapped: nothing is copied until used)."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def fragment_rows(path: Path) -> int:
    """Rows in a fragment, from its footer; raises pa.ArrowInvalid if it is not one."""
    return pa.ipc.open_file(pa.memory_map(str(path))).count_rows()


def fragment_schema(path: Path) -> pa.Schema:
    """The schema of a staged fragment, from its footer."""
    return pa.ipc.open_file(pa.memory_map(str(path))).schema


def compact(
    sources: list[Path],
    out_dir: Path | Store,
    start: int,
    end: int,
    on_group: RowGroupHook = None,
) -> Path | PurePosixPath:
    """Merge fragments (in block order, covering start..end, holding logs) into one final file
    of the folder or store, a row group's worth in memory at a time, handing each row group to
    `on_group` too (the event decoder); return its path."""
    store, key = as_store(out_dir), f"{LOGS_DIR}/{log_file_name(start, end)}"
    tables = (read_fragment(p) for p in sources)
    _write_atomically(store, key, tables, fragment_schema(sources[0]), on_group)
    return store.location(key)


def write_empty(
    schema: pa.Schema, out_dir: Path | Store, start: int, end: int
) -> Path | PurePosixPath:
    """A final file with no rows, so that a query over OUT/logs/*.parquet finds the schema."""
    store, key = as_store(out_dir), f"{LOGS_DIR}/{log_file_name(start, end)}"
    _write_atomically(store, key, [], schema)
    return store.location(key)


def _write_atomically(
    store: Store,
    key: str,
    tables: Iterable[pa.Table],
    schema: pa.Schema,
    on_group: RowGroupHook = None,
) -> None:
    columns = schema.names
    with (
        store.atomic(key) as tmp,
        pq.ParquetWriter(
            tmp,
            schema,
            compression=COMPRESSION,
            write_statistics=[c for c in columns if c in STATISTICS],
            use_dictionary=[c for c in columns if c not in PLAIN],
        ) as writer,
    ):
        for group in _row_groups(tables):
            writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
            if on_group is not None:
                on_group(group)


def _row_groups(tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """The rows of `tables` in order, regrouped into ROW_GROUP_ROWS-row tables (the last one
    shorter): fragments of a few logs each must not become as many tiny row groups."""
    pending: list[pa.Table] = []
    rows = 0
    for table in tables:
        pending.append(table)
        rows += table.num_rows
        if rows >= ROW_GROUP_ROWS:
            combined = pa.concat_tables(pending)
            full = rows // ROW_GROUP_ROWS * ROW_GROUP_ROWS
            yield combined.slice(0, full)
            pending, rows = [combined.slice(full)], rows - full
    if rows:
        yield pa.concat_tables(pending)
