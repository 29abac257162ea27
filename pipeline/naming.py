"""Every output file name, in one place.

Names carry zero-padded block ranges (12 digits, enough for any chain for decades), so that name
order is block order. They sit in OUT/logs/ so that `pandas.read_parquet("OUT/logs")` reads them
while OUT/summary.json stays beside them. Work in progress is hidden: dot-prefixed and not ending
in .parquet, so a `read_parquet('OUT/**/*.parquet')` glob never picks it up.
"""

from __future__ import annotations

import re
from pathlib import Path

BLOCK_DIGITS = 12
SUMMARY_FILE = "summary.json"
LOGS_DIR = "logs"
_LOG_FILE = re.compile(rf"^logs__(\d{{{BLOCK_DIGITS}}})_to_(\d{{{BLOCK_DIGITS}}})\.parquet$")


def log_file_name(start: int, end: int) -> str:
    """The final name of the file holding the logs of blocks start..end."""
    return f"logs__{start:0{BLOCK_DIGITS}d}_to_{end:0{BLOCK_DIGITS}d}.parquet"


def log_file_path(out_dir: Path, start: int, end: int) -> Path:
    """Where the logs of blocks start..end are stored."""
    return out_dir / LOGS_DIR / log_file_name(start, end)


def temp_path(final: Path) -> Path:
    """Where a file is written before it is renamed to `final`."""
    return final.with_name(f".{final.name}.tmp")


def parse_log_file_name(name: str) -> tuple[int, int] | None:
    """The (start, end) block range of a log file name, or None for any other file."""
    match = _LOG_FILE.match(name)
    return (int(match[1]), int(match[2])) if match else None


def existing_log_files(out_dir: Path) -> list[Path]:
    """Log files (final or in progress) that a run has left in `out_dir`."""
    logs_dir = out_dir / LOGS_DIR
    if not logs_dir.is_dir():
        return []
    return sorted(
        p
        for p in logs_dir.iterdir()
        if parse_log_file_name(p.name) or parse_log_file_name(p.name[1:].removesuffix(".tmp"))
    )
