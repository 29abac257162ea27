"""One helper for each thing the tests check again and again: the run is complete and equals the
node, run the CLI, bad input is refused cleanly, and kill a run at a chosen moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
from conftest import node_rows, stored_rows

from pipeline.store.layout import LOGS_DIR, STAGING_DIR

CLI_TIMEOUT_S = 180


def assert_equals_node(result, output: Path, node, start: int, end: int, **filters) -> None:
    """The run ended complete, and `output` holds exactly the node's logs of start..end: every
    row once, nothing left staged or half-written."""
    if result is not None:
        assert result.exit_code == 0, result.message
        summary = result.summary
        assert summary["failed_ranges"] == [] and summary["unfetched_ranges"] == [], summary
    expected = node_rows(node, start, end, **filters)
    assert stored_rows(output) == expected
    assert_readers_see_no_duplicate(output)
    staging = output / STAGING_DIR
    assert not staging.is_dir() or not [p for p in staging.iterdir() if p.is_file()]
    assert not [p for p in output.glob("**/*") if p.name.endswith(".tmp")]


def assert_readers_see_no_duplicate(output: Path) -> None:
    """What `read_parquet('OUT/**/*.parquet')` would read: whole files, no row twice."""
    files = sorted(output.glob("**/*.parquet"))
    assert all(f.parent.name == LOGS_DIR for f in files), files
    keys = [
        (row["block_number"], row["log_index"])
        for f in files
        for row in pq.read_table(f, columns=["block_number", "log_index"]).to_pylist()
    ]
    assert len(keys) == len(set(keys))


def cli_command(*args: str) -> list[str]:
    """The command line a user types, as `python -m pipeline ...`."""
    return [sys.executable, "-m", "pipeline", *args]


def run_cli(*args: str, timeout: float = CLI_TIMEOUT_S, **kwargs) -> subprocess.CompletedProcess:
    """Run the CLI to its end; text output captured."""
    return subprocess.run(
        cli_command(*args), capture_output=True, text=True, timeout=timeout, **kwargs
    )


def start_cli(*args: str, **kwargs) -> subprocess.Popen:
    """Start the CLI in its own process group (so that it can be killed whole)."""
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(cli_command(*args), start_new_session=True, **kwargs)


def assert_usage_error(completed: subprocess.CompletedProcess, output: Path) -> str:
    """Exit 2, one line on stderr that starts with "error:", no traceback, nothing written to
    `output`; returns the line."""
    assert completed.returncode == 2, (completed.returncode, completed.stderr)
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout
    assert not output.exists() or not any(output.iterdir()), list(output.iterdir())
    return lines[0]


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Poll `condition` until it is truthy (its value is returned); fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.02)


def kill_at(
    process: subprocess.Popen,
    moment: Callable[[], object],
    what: str,
    timeout: float = 60,
    whole_group: bool = True,
) -> bool:
    """SIGKILL the run (its process group, or the one process) as soon as `moment()` is true;
    False if the run ended before the moment came."""
    deadline = time.monotonic() + timeout
    while not moment():
        if process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.005)
    if whole_group:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        process.kill()
    process.wait(timeout=30)
    return True
