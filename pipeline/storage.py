"""Exporter: store Arrow tables as Parquet files that appear atomically under their final name."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import ConfigError
from .naming import LOGS_DIR, SUMMARY_FILE, existing_log_files, log_file_path, temp_path

SORT_KEYS = [("block_number", "ascending"), ("log_index", "ascending")]


def write_logs(table: pa.Table, out_dir: Path, start: int, end: int) -> Path:
    """Write the logs of blocks start..end sorted by (block_number, log_index); return the path.

    The file is written and fsynced under a hidden temporary name, then renamed, so readers never
    see a partial file.
    """
    final = log_file_path(out_dir, start, end)
    tmp = temp_path(final)
    try:
        pq.write_table(table.sort_by(SORT_KEYS), tmp, compression="zstd")
        _fsync(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prepare_output(out_dir: Path, overwrite: bool) -> None:
    """Create the output folder; refuse one holding an earlier run's logs unless `overwrite`."""
    earlier = existing_log_files(out_dir)
    if earlier and not overwrite:
        raise ConfigError(
            f"{out_dir} already holds {len(earlier)} log files from an earlier run: "
            "pass --overwrite to replace them, or choose another --output"
        )
    try:
        for path in earlier:
            path.unlink()
        (out_dir / SUMMARY_FILE).unlink(missing_ok=True)
        (out_dir / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot use --output {out_dir}: {exc.strerror or exc}") from None
