"""Child-process hygiene: signals belong to the supervisor, and orphans end themselves."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing import forkserver
from pathlib import Path

PARENT_CHECK_INTERVAL_S = 1.0
M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h
MALLOC_ARENAS = 2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20
_HAS_PROC = Path("/proc/self/stat").exists()
ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


def process_context() -> mp.context.BaseContext:
    """Forkserver processes: children start from a clean process that has imported requests
    and pyarrow once. The server starts now, in the background, so that its imports overlap the
    caller's preflight instead of following it."""
    # Arrow's C++ default pool is chosen when pyarrow loads, and pa.set_memory_pool does not
    # reach the allocations made inside Arrow (reading files, compute): with its default,
    # mimalloc, they kept ~30 MB more in each process (1M logs, the tree's peak: 373-407 MB
    # against 298-323 MB). The process server, and so every child, loads pyarrow after this;
    # so does the command line's own process. A user's own choice stands.
    os.environ.setdefault(ARROW_POOL_VARIABLE, "system")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["pipeline.fetch.worker", "pipeline.store.writer"])
    threading.Thread(target=forkserver.ensure_running, daemon=True).start()
    return ctx


def run_child(
    main: Callable[..., None], supervisor_pid: int, environ: dict[str, str], *args: object
) -> None:
    """A child process's entry point: the supervisor's environment (`environ`), the hygiene
    below, then `main(*args)`. The supervisor starts every child through it, so the stages it
    runs need not know about processes."""
    # The process server keeps the environment of the run that started it: a later run in the
    # same process (renewed credentials, another proxy) must not get the old one.
    os.environ.clear()
    os.environ.update(environ)
    init_child(supervisor_pid)
    main(*args)


def init_child(supervisor_pid: int) -> None:
    """Ignore Ctrl-C/SIGTERM (the supervisor shuts us down in order), exit if it dies, and keep
    memory lean (lean_memory)."""
    lean_memory()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch, args=(supervisor_pid,), daemon=True).start()


def lean_memory() -> None:
    """Have pyarrow (if this process uses it) allocate with glibc's malloc, kept to a few
    arenas: for a process a run uses (its children, and the one that calls run_backfill)."""
    if (pyarrow := sys.modules.get("pyarrow")) is not None:
        # pyarrow's default, mimalloc, keeps a heap per thread: with the verifier's threads,
        # 1M logs peaked at ~470 MB PSS for the tree and 5.4 CPU s, against ~320 MB and 4.4 s
        # this way (measured).
        pyarrow.set_memory_pool(pyarrow.system_memory_pool())
    # glibc gives each thread that meets contention its own arena (up to 8 per core) and keeps
    # what an answer freed there for reuse: a worker whose fetch threads each parsed a few big
    # answers held ~360 MB instead of ~200 MB (1M logs, measured). Two arenas cost nothing in
    # speed here: the parse runs under the GIL or in one C call per answer. In the process that
    # calls run_backfill, the verifier's 64 threads kept ~60 MB more without the limit.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def _watch(pid: int) -> None:
    while _alive(pid):
        time.sleep(PARENT_CHECK_INTERVAL_S)
    # A SIGKILLed supervisor cannot stop us; a stray worker must not write into a re-run's output.
    os._exit(1)


def _alive(pid: int) -> bool:
    if _HAS_PROC:
        try:
            # A dead but unreaped supervisor is a zombie, state "Z": gone all the same.
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def join_all(processes: list, grace: float, abort: Callable[[], bool] = lambda: False) -> None:
    """Wait up to `grace` seconds (less if `abort` turns true) for processes, then kill them."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not abort() and any(p.is_alive() for p in processes):
        time.sleep(0.05)
    for process in processes:
        if process.is_alive():
            process.kill()
        process.join(2)
