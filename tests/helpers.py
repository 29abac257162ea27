"""One helper for each thing the tests check again and again: the run is complete and equals the
node, run the CLI, bad input is refused cleanly, wait for an event, and kill a run at a chosen
moment."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pyarrow.parquet as pq
from conftest import node_rows, stored_rows

from pipeline.store.layout import EVENTS_DIR, LOGS_DIR, STAGING_DIR

CLI_TIMEOUT_S = 180


def assert_equals_node(result, output: Path, node, start: int, end: int, **filters) -> None:
    """The run ended complete (with `result` None: checks the folder only), its summary counts
    what is stored, and `output` holds exactly the node's logs of start..end: every row once,
    nothing left staged or half-written."""
    expected = node_rows(node, start, end, **filters)
    if result is not None:
        assert result.exit_code == 0, result.message
        summary = result.summary
        assert summary["failed_ranges"] == [] and summary["unfetched_ranges"] == [], summary
        assert summary["stored_logs"] == len(expected), (summary["stored_logs"], len(expected))
        if summary["already_stored_blocks"] == 0:  # a first run fetched every row itself
            assert summary["logs"] == len(expected), (summary["logs"], len(expected))
    assert stored_rows(output) == expected
    assert_readers_see_no_duplicate(output)
    staging = output / STAGING_DIR
    assert not staging.is_dir() or not [p for p in staging.iterdir() if p.is_file()]
    assert not [p for p in output.glob("**/*") if p.name.endswith(".tmp")]


def assert_readers_see_no_duplicate(output: Path) -> None:
    """What the documented globs (`OUT/logs/*.parquet`, `OUT/events/<event>/*.parquet`) read:
    whole files, no row twice in any table, and no other readable file anywhere."""
    tables = [output / LOGS_DIR, *sorted((output / EVENTS_DIR).glob("*/"))]
    files = sorted(output.glob("**/*.parquet"))
    assert all(f.parent in tables for f in files), files
    for folder in tables:
        keys = [
            (row["block_number"], row["log_index"])
            for f in sorted(folder.glob("*.parquet"))
            for row in pq.read_table(f, columns=["block_number", "log_index"]).to_pylist()
        ]
        assert len(keys) == len(set(keys)), folder


def cli_command(*args: str) -> list[str]:
    """The command line a user types, as `python -m pipeline ...`."""
    return [sys.executable, "-m", "pipeline", *args]


def run_cli(*args: str, timeout: float = CLI_TIMEOUT_S, **kwargs) -> subprocess.CompletedProcess:
    """Run the CLI to its end; text output captured."""
    return subprocess.run(
        cli_command(*args), capture_output=True, text=True, timeout=timeout, **kwargs
    )


def run_cli_in_process(*args: str) -> subprocess.CompletedProcess:
    """The CLI's own entry point called in this process, for unit tests (no interpreter to
    start); exit code and output as `run_cli` gives them."""
    from pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code
    code = code if isinstance(code, int) else 0 if code is None else 1  # as the interpreter does
    return subprocess.CompletedProcess(cli_command(*args), code, out.getvalue(), err.getvalue())


def start_cli(*args: str, **kwargs) -> subprocess.Popen:
    """Start the CLI in its own process group (so that it can be killed whole)."""
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(cli_command(*args), start_new_session=True, **kwargs)


class Lines(list):
    """The lines of a stream read so far; `ended` is set once the stream is at its end."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = threading.Event()

    def text(self) -> str:
        """Everything read so far, as one string."""
        return "".join(self)


def lines_of(stream: IO[str]) -> Lines:
    """A list that fills with the stream's lines as a background thread reads them: a test can
    wait for a line without blocking on a pipe (and the pipe never fills up)."""
    lines = Lines()

    def read() -> None:
        try:
            for line in stream:
                lines.append(line)
        finally:
            lines.ended.set()

    threading.Thread(target=read, daemon=True).start()
    return lines


def folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time: equal states mean nothing
    was written in between."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.glob("**/*"))
        if p.is_file()
    }


def assert_usage_error(
    completed: subprocess.CompletedProcess, output: Path, before: dict | None = None
) -> str:
    """Exit 2, one line on stderr that starts with "error:", no traceback, nothing written to
    `output` (absent or empty; or, given its `folder_state` from before, unchanged); returns the
    line. Also takes a click `Result`."""
    code = getattr(completed, "returncode", getattr(completed, "exit_code", None))
    assert code == 2, (code, completed.stderr)
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), completed.stderr
    assert "Traceback" not in completed.stderr + completed.stdout
    if before is None:
        assert not output.exists() or not any(output.iterdir()), list(output.iterdir())
    else:
        assert folder_state(output) == before
    return lines[0]


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.02
) -> object:
    """Poll `condition` every `interval` s until it is truthy (its value is returned); fail
    after `timeout` s. The timeout is a bound for a hang, never a pace: make it generous."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


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
