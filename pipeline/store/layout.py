"""Every output file name, in one place.

    OUT/logs/logs__<from>_to_<to>.parquet    final files (what readers read)
    OUT/events/<event>/<event>__<from>_to_<to>.parquet
                                             the decoded events (--event, --abi): one folder per
                                             event, one file beside each final logs file
    OUT/manifest.json                        the proof of coverage: filter, chain, ranges, files
    OUT/summary.json                         the last run's statistics
    OUT/.staging/frag__<from>_to_<to>.frag   fragments (Arrow IPC): results stored durably as
                                             they arrive, compacted into final files later
    OUT/.staging/incoming/<pid>-<task>.arrow a worker's result, until the writer accepts it
    OUT/.lock                                held by the run that writes to the folder
    PREFIX/.lease.json                       in object storage: the lease of the run writing
                                             there (store.lease); staging, incoming results and
                                             crash logs then live in a local staging folder
    OUT/.crash/worker-<endpoint>-<pid>.log   the traceback of a worker process that crashed
    OUT/.crash/writer-<pid>.log              ... of the writer process (API keys scrubbed)

Names carry zero-padded block ranges (12 digits, enough for any chain for decades), so that name
order is block order. Final files sit in OUT/logs/ so that `pandas.read_parquet("OUT/logs")`
reads them, and each event's table sits in a folder of its own: every documented glob
(`OUT/logs/*.parquet`, `OUT/events/Transfer/*.parquet`) reads exactly one table. Everything else
is hidden from readers: dot-prefixed and not ending in .parquet, so a
glob never picks up staging or half-written data.
"""

from __future__ import annotations

import re
from pathlib import Path

BLOCK_DIGITS = 12
SUMMARY_FILE = "summary.json"
TIMELINE_FILE = "timeline.png"  # next to the summary: requests over time per endpoint
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"  # held by the run writing to the folder
WRITER_LOCK_FILE = ".writer.lock"  # held by that run's writer process
LOGS_DIR = "logs"
EVENTS_DIR = "events"
STAGING_DIR = ".staging"
INCOMING_DIR = ".staging/incoming"  # never trusted by a later run: deleted before it starts
CRASH_DIR = ".crash"  # tracebacks of crashed processes, kept for whoever investigates
_LOG_FILE = re.compile(rf"^logs__(\d{{{BLOCK_DIGITS}}})_to_(\d{{{BLOCK_DIGITS}}})\.parquet$")
_FRAGMENT = re.compile(rf"^frag__(\d{{{BLOCK_DIGITS}}})_to_(\d{{{BLOCK_DIGITS}}})\.frag$")


def log_file_name(start: int, end: int) -> str:
    """The final name of the file holding the logs of blocks start..end."""
    return f"logs__{start:0{BLOCK_DIGITS}d}_to_{end:0{BLOCK_DIGITS}d}.parquet"


def log_file_path(out_dir: Path, start: int, end: int) -> Path:
    """Where the logs of blocks start..end are stored."""
    return out_dir / LOGS_DIR / log_file_name(start, end)


def event_file_name(folder: str, start: int, end: int) -> str:
    """The name of the file holding the decoded `folder` events of blocks start..end."""
    return f"{folder}__{start:0{BLOCK_DIGITS}d}_to_{end:0{BLOCK_DIGITS}d}.parquet"


def event_file_path(out_dir: Path, folder: str, start: int, end: int) -> Path:
    """Where the decoded `folder` events of blocks start..end are stored."""
    return out_dir / EVENTS_DIR / folder / event_file_name(folder, start, end)


def event_files(out_dir: Path) -> list[Path]:
    """Every visible file in the event folders (final files and anything else found there)."""
    events_dir = out_dir / EVENTS_DIR
    if not events_dir.is_dir():
        return []
    return sorted(p for folder in events_dir.iterdir() if folder.is_dir() for p in folder.iterdir())


def fragment_path(out_dir: Path, start: int, end: int) -> Path:
    """Where the staged logs of blocks start..end are kept until compaction."""
    name = f"frag__{start:0{BLOCK_DIGITS}d}_to_{end:0{BLOCK_DIGITS}d}.frag"
    return out_dir / STAGING_DIR / name


def incoming_path(out_dir: Path, pid: int, task_id: int) -> Path:
    """Where worker `pid` leaves the result of task `task_id` for the writer."""
    return out_dir / INCOMING_DIR / f"{pid}-{task_id}.arrow"


def worker_crash_log(out_dir: Path, endpoint: str, pid: int) -> Path:
    """Where worker `pid` of `endpoint` leaves its traceback if it crashes."""
    return out_dir / CRASH_DIR / f"worker-{_file_safe(endpoint)}-{pid}.log"


def writer_crash_log(out_dir: Path, pid: int) -> Path:
    """Where writer process `pid` leaves its traceback if it crashes."""
    return out_dir / CRASH_DIR / f"writer-{pid}.log"


def _file_safe(name: str) -> str:
    # Endpoint names come from hosts and users: "127.0.0.1:8545", "my node".
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def parse_fragment_name(name: str) -> tuple[int, int] | None:
    """The (start, end) block range of a fragment name, or None for any other file."""
    match = _FRAGMENT.match(name)
    return (int(match[1]), int(match[2])) if match else None


def temp_path(final: Path) -> Path:
    """Where a file is written before it is renamed to `final`."""
    return final.with_name(f".{final.name}.tmp")


def parse_log_file_name(name: str) -> tuple[int, int] | None:
    """The (start, end) block range of a log file name, or None for any other file."""
    match = _LOG_FILE.match(name)
    return (int(match[1]), int(match[2])) if match else None


def final_files(out_dir: Path) -> dict[str, tuple[int, int]]:
    """Final log files in `out_dir`: name -> block range."""
    logs_dir = out_dir / LOGS_DIR
    if not logs_dir.is_dir():
        return {}
    found = {p.name: parse_log_file_name(p.name) for p in logs_dir.iterdir()}
    return {name: blocks for name, blocks in sorted(found.items()) if blocks}


def fragments(out_dir: Path) -> list[tuple[int, int, Path]]:
    """Staged fragments in `out_dir` as (start, end, path), in block order."""
    staging = out_dir / STAGING_DIR
    if not staging.is_dir():
        return []
    found = [(parse_fragment_name(p.name), p) for p in staging.iterdir()]
    return sorted((blocks[0], blocks[1], p) for blocks, p in found if blocks)


def temp_files(out_dir: Path) -> list[Path]:
    """Half-written files a crash may have left (safe to delete before a run)."""
    places = [out_dir, out_dir / LOGS_DIR, out_dir / STAGING_DIR]
    if (out_dir / EVENTS_DIR).is_dir():
        places += [d for d in (out_dir / EVENTS_DIR).iterdir() if d.is_dir()]
    return [p for d in places if d.is_dir() for p in d.iterdir() if p.name.endswith(".tmp")]
