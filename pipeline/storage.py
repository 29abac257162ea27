"""Exporter: Parquet files that appear atomically and durably under their final name.

Every file is written under a hidden temporary name, fsynced, renamed, and its folder fsynced,
so after a crash at any instant a file is either complete or absent.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .naming import fragment_path, log_file_path, temp_path

SORT_KEYS = [("block_number", "ascending"), ("log_index", "ascending")]
ROW_GROUP_ROWS = 128 * 1024  # big enough to scan fast, small enough for readers' memory
COMPRESSION = "zstd"


def write_fragment(table: pa.Table, out_dir: Path, start: int, end: int) -> Path:
    """Stage the logs of blocks start..end (sorted) as a durable fragment; return its path."""
    path = fragment_path(out_dir, start, end)
    _write_atomically(path, [table.sort_by(SORT_KEYS)], table.schema)
    return path


def read_fragment(path: Path) -> pa.Table:
    """A staged fragment's logs."""
    return pq.read_table(path)


def row_count(path: Path) -> int:
    """Rows in a Parquet file, from its footer."""
    return pq.read_metadata(path).num_rows


def compact(sources: list[Path], out_dir: Path, start: int, end: int) -> tuple[Path | None, int]:
    """Merge fragments (in block order, covering start..end) into one final file, one fragment
    in memory at a time; return (its path, rows), or (None, 0) if they hold no logs."""
    rows = sum(map(row_count, sources))
    if not rows:
        return None, 0
    schema = pq.read_schema(sources[0])
    path = log_file_path(out_dir, start, end)
    _write_atomically(path, (read_fragment(p) for p in sources), schema)
    return path, rows


def write_empty(schema: pa.Schema, out_dir: Path, start: int, end: int) -> Path:
    """A final file with no rows, so that a query over OUT/**/*.parquet finds the schema."""
    path = log_file_path(out_dir, start, end)
    _write_atomically(path, [], schema)
    return path


def _write_atomically(path: Path, tables: Iterable[pa.Table], schema: pa.Schema) -> None:
    tmp = temp_path(path)
    try:
        with pq.ParquetWriter(tmp, schema, compression=COMPRESSION) as writer:
            for table in tables:
                if table.num_rows:
                    writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
