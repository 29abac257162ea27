"""Folder locks: one run writes to an output folder at a time, and its writer holds the folder
until it stops. Both are flock()s, which die with their processes: a killed run never leaves one
behind."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.store.layout import LOCK_FILE, WRITER_LOCK_FILE

ORPHAN_WRITER_WAIT_S = 10.0


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold the output folder for one run: a second run into it is refused, not interleaved.
    The locks die with their processes, so a killed run never leaves one behind."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = (out / LOCK_FILE).open("a+")
    except FileExistsError:
        raise ConfigError(f"--output {out} is a file: give a folder") from None
    except OSError as exc:
        raise ConfigError(f"cannot use --output {out}: {exc.strerror or exc}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another backfill is writing to {out}: wait for it, or choose another --output"
            ) from None
        # The writer of a run whose supervisor was just killed stops within a second or two;
        # until then it may still be writing here.
        with writer_lock(out):
            pass
        yield


@contextlib.contextmanager
def writer_lock(out: Path) -> Iterator[None]:
    """Held by a run's writer process while it writes (and checked before a run starts)."""
    with (out / WRITER_LOCK_FILE).open("a+") as handle:
        deadline = time.monotonic() + ORPHAN_WRITER_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"a writer process of an earlier run still holds {out}: stop it first"
                    ) from None
                time.sleep(0.1)
        yield
