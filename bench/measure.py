"""Measuring one contender from outside: its process tree's wall time, CPU time and peak PSS,
and the machine's CPU meanwhile (this benchmark's helpers, and everyone else)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PSS_BUDGET = 0.05  # share of one core the memory sampler may use


@dataclass
class Measurement:
    """One contender's run."""

    name: str
    seconds: float
    peak_mb: float
    cpu_s: float  # user + system time of the contender's process tree
    box_cpu: float  # busy share of all cores during the run, whoever used them
    others_cpu: float  # share of all cores used by processes outside this benchmark
    helper_cpu_s: float  # this benchmark's own helpers meanwhile: anvil and simulated providers
    logs: int = 0
    verified: str = ""
    fetch_s: float | None = None  # first eth_getLogs to last answer, seen at the proxies
    started: float = 0.0  # time.monotonic() at the process start ...
    ended: float = 0.0  # ... and at its exit
    startup_s: float | None = None  # process start to the first eth_getLogs, seen at a proxy
    shutdown_s: float | None = None  # the last eth_getLogs answered to the process exit
    extra: dict[str, str] = field(default_factory=dict)  # scenario-specific columns

    @property
    def logs_per_second(self) -> float:
        """End-to-end throughput, startup included."""
        return self.logs / self.seconds if self.seconds else 0.0

    @property
    def fetch_rate(self) -> float:
        """Throughput of the fetch phase alone (0 when it was not observed)."""
        return self.logs / self.fetch_s if self.fetch_s else 0.0


class TreeSampler:
    """Samples /proc: CPU time of the contender's tree and of this whole benchmark (anvil and
    the simulated providers too), and the peak PSS of the contender's tree.

    Reading smaps_rollup walks every page table and costs milliseconds per big process (70 ms of
    CPU for a 16-worker tree), so PSS passes are spaced to keep them under PSS_BUDGET of one core:
    the sampler must not compete with what it measures."""

    def __init__(self, root: int, period: float) -> None:
        self.root, self.period = root, period
        self.peak = 0
        self.own_cpu = 0.0  # CPU seconds the sampler thread itself used
        self._tree: dict[int, int] = {}  # contender pid -> latest utime + stime, clock ticks
        self._family: dict[int, tuple[int, int]] = {}  # our pid -> (first seen, latest) ticks
        self._next_pss = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> TreeSampler:
        """Sample in a thread until stop()."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (the last sample is taken before the thread ends)."""
        self._done.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        """CPU time of every process seen in the contender's tree."""
        return sum(self._tree.values()) / CLOCK_TICKS

    @property
    def family_seconds(self) -> float:
        """CPU time this whole benchmark used while sampling: contender, anvil, providers."""
        ours = sum(
            last - first for pid, (first, last) in self._family.items() if pid not in self._tree
        )
        return ours / CLOCK_TICKS + self.cpu_seconds

    def _run(self) -> None:
        while not self._done.is_set():
            self._sample()
            self._done.wait(self.period)
        self.own_cpu = time.thread_time()

    def _sample(self) -> None:
        children: dict[int, list[int]] = {}
        cpu: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            # After the command name: state, ppid, ... utime and stime are fields 14 and 15.
            children.setdefault(int(fields[1]), []).append(int(entry))
            cpu[int(entry)] = int(fields[11]) + int(fields[12])
        tree = _descendants(self.root, children)
        for pid in tree:
            self._tree[pid] = max(self._tree.get(pid, 0), cpu.get(pid, 0))
        for pid in _descendants(os.getpid(), children):
            if pid in cpu:
                self._family[pid] = (self._family.get(pid, (cpu[pid], 0))[0], cpu[pid])
        now = time.perf_counter()
        if now >= self._next_pss:
            self.peak = max(self.peak, sum(map(_pss, tree)))
            self._next_pss = now + (time.perf_counter() - now) / PSS_BUDGET


def _descendants(root: int, children: dict[int, list[int]]) -> list[int]:
    """`root` and every process below it."""
    found, stack = [], [root]
    while stack:
        found.append(stack.pop())
        stack += children.get(found[-1], [])
    return found


def _pss(pid: int) -> int:
    # PSS, not RSS: forked children share pages with their parent, and summing RSS would count
    # those pages once per process.
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _busy_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    with open("/proc/stat", "rb") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def run_measured(name: str, command: list[str], period: float) -> Measurement:
    """Run `command` to completion, sampling its tree; logs and verdict are filled in later."""
    busy0, total0 = _busy_ticks()
    started = time.monotonic()  # the proxies' clock: start-up and shut-down are differences
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampler = TreeSampler(process.pid, period).start()
    _, stderr = process.communicate()
    ended = time.monotonic()
    seconds = ended - started
    sampler.stop()
    busy1, total1 = _busy_ticks()
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed ({process.returncode}): {stderr.decode()[-800:]}")
    # /proc/stat counts every core: total ticks = wall x cores.
    box = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
    others = max(0.0, busy1 - busy0 - sampler.family_seconds * CLOCK_TICKS) / (total1 - total0)
    helpers = sampler.family_seconds - sampler.cpu_seconds - sampler.own_cpu
    return Measurement(
        name,
        seconds,
        sampler.peak / 2**20,
        sampler.cpu_seconds,
        box,
        others,
        helpers,
        started=started,
        ended=ended,
    )


def machine_line() -> str:
    """The core count, and the usable cores when the affinity mask differs."""
    cores, usable = os.cpu_count(), len(os.sched_getaffinity(0))
    return f"machine: {cores} cores" + (f" ({usable} usable)" if usable != cores else "")
