"""Benchmarks against a local anvil: `python -m pipeline.bench [cpu|provider|scaling|all]`.

Every contender runs as its own process tree; wall time, peak memory (PSS summed over the tree)
and CPU time are measured from outside, and each output is compared row by row with the node's
own eth_getLogs answer before any speed is reported. The scenarios live in bench_scenarios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import requests

JSON = {"Content-Type": "application/json"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Compared columns, in the types both this tool and cryo can be cast to.
ROW_SCHEMA = pa.schema(
    [
        ("block_number", pa.uint64()),
        ("log_index", pa.uint32()),
        ("transaction_hash", pa.binary()),
        ("address", pa.binary()),
        *((f"topic{i}", pa.binary()) for i in range(4)),
        ("data", pa.binary()),
    ]
)
ROW_ORDER = [("block_number", "ascending"), ("log_index", "ascending")]
BUSY_MACHINE = 0.1  # others' CPU share above which the table carries a warning
PSS_BUDGET = 0.05  # share of one core the memory sampler may use
NODE_READ_BLOCKS = 200  # blocks per eth_getLogs when reading the node's own answer


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
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampler = TreeSampler(process.pid, period).start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - started
    sampler.stop()
    busy1, total1 = _busy_ticks()
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed ({process.returncode}): {stderr.decode()[-800:]}")
    # /proc/stat counts every core: total ticks = wall x cores.
    box = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
    others = max(0.0, busy1 - busy0 - sampler.family_seconds * CLOCK_TICKS) / (total1 - total0)
    helpers = sampler.family_seconds - sampler.cpu_seconds - sampler.own_cpu
    return Measurement(
        name, seconds, sampler.peak / 2**20, sampler.cpu_seconds, box, others, helpers
    )


def node_logs(url: str, start: int, end: int) -> pa.Table:
    """The node's own eth_getLogs answer for start..end, parsed here independently of the tool's
    converter, as a ROW_SCHEMA table in row order."""
    session, rows = requests.Session(), {name: [] for name in ROW_SCHEMA.names}
    for lo in range(start, end + 1, NODE_READ_BLOCKS):
        hi = min(end, lo + NODE_READ_BLOCKS - 1)
        for log in _get_logs(session, url, lo, hi):
            rows["block_number"].append(int(log["blockNumber"], 16))
            rows["log_index"].append(int(log["logIndex"], 16))
            for key, column in (("transactionHash", "transaction_hash"), ("address", "address")):
                rows[column].append(bytes.fromhex(log[key][2:]))
            topics = log["topics"]
            for i in range(4):
                rows[f"topic{i}"].append(bytes.fromhex(topics[i][2:]) if i < len(topics) else None)
            rows["data"].append(bytes.fromhex(log["data"][2:]))
    return pa.table(rows, schema=ROW_SCHEMA).sort_by(ROW_ORDER)


def _get_logs(session: requests.Session, url: str, lo: int, hi: int) -> list[dict]:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_getLogs",
        "params": [{"fromBlock": hex(lo), "toBlock": hex(hi)}],
    }
    payload = orjson.loads(session.post(url, data=orjson.dumps(body), headers=JSON).content)
    if "result" not in payload:
        raise RuntimeError(f"eth_getLogs {lo}-{hi}: {payload}")
    return payload["result"]


def stored_rows(path: Path) -> pa.Table:
    """Every row under `path` (this tool's OUT/logs or cryo's output dir) as ROW_SCHEMA, sorted."""
    files = sorted(str(p) for p in path.rglob("*.parquet") if not p.name.startswith("."))
    if not files:
        return ROW_SCHEMA.empty_table()
    table = ds.dataset(files, format="parquet").to_table(columns=ROW_SCHEMA.names)
    return table.cast(ROW_SCHEMA).sort_by(ROW_ORDER)


def compare(expected: pa.Table, stored: pa.Table) -> str:
    """The verdict: "yes" when the stored rows are exactly the node's, else what differs."""
    if stored.num_rows != expected.num_rows:
        return f"NO: {stored.num_rows:,} rows, node has {expected.num_rows:,}"
    if stored.equals(expected):
        return "yes"
    keys = ["block_number", "log_index"]
    same_keys = all(pc.all(pc.equal(stored[k], expected[k])).as_py() for k in keys)
    return "NO: same keys, other values" if same_keys else "NO: different (block, log) keys"


def fetch_only(url: str, start: int, end: int, chunk: int) -> int:
    """The ceiling: eth_getLogs over the range with orjson parsing and nothing else."""
    session = requests.Session()
    return sum(
        len(_get_logs(session, url, lo, min(end, lo + chunk - 1)))
        for lo in range(start, end + 1, chunk)
    )


def machine_line() -> str:
    """The core count, and the usable cores when the affinity mask differs."""
    cores, usable = os.cpu_count(), len(os.sched_getaffinity(0))
    return f"machine: {cores} cores" + (f" ({usable} usable)" if usable != cores else "")


def format_table(results: list[Measurement]) -> str:
    """The comparison table; scenario-specific columns come after the common ones."""
    fetch = any(r.fetch_s is not None for r in results)
    for r in results:
        if fetch:  # the fetch columns go first among the extras
            seen = r.fetch_s is not None
            r.extra = {
                "fetch s": f"{r.fetch_s:.2f}" if seen else "-",
                "fetch logs/s": f"{r.fetch_rate:,.0f}" if seen else "-",
                **r.extra,
            }
    extras = list(dict.fromkeys(k for r in results for k in r.extra))
    head = ["contender", "wall s", "logs", "logs/s", "peak PSS MB", "CPU s", "helpers CPU s"]
    head += ["box CPU %", "others CPU %"]
    rows = [
        [
            r.name,
            f"{r.seconds:.2f}",
            f"{r.logs:,}",
            f"{r.logs_per_second:,.0f}",
            f"{r.peak_mb:,.0f}",
            f"{r.cpu_s:.1f}",
            f"{r.helper_cpu_s:.1f}",
            f"{100 * r.box_cpu:.0f}",
            f"{100 * r.others_cpu:.0f}",
            *(r.extra.get(k, "") for k in extras),
            r.verified,
        ]
        for r in results
    ]
    head += [*extras, "rows verified"]
    widths = [max(len(str(c)) for c in column) for column in zip(head, *rows, strict=True)]
    lines = []
    for row in [head, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:-1], widths[1:-1], strict=True)]
        lines.append("  ".join([*cells, row[-1]]))
    busiest = max((r.others_cpu for r in results), default=0.0)
    if busiest > BUSY_MACHINE:
        lines.append(
            f"note: processes outside this benchmark used up to {busiest:.0%} of the machine "
            "during these runs (others CPU %): the affected figures are pessimistic"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen scenarios (all of them at quick sizes when
    there are no arguments)."""
    from .bench_scenarios import SCENARIOS, add_arguments, flags_epilog  # imports this module

    parser = argparse.ArgumentParser(
        prog="python -m pipeline.bench",
        description="Benchmarks against a local anvil (no arguments: every scenario, quickly).",
        epilog=flags_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="SCENARIO")
    for name, (summary, _) in SCENARIOS.items():
        add_arguments(name, sub.add_parser(name, help=summary, description=summary))
    every = sub.add_parser("all", help="every scenario in turn, at its default sizes")
    for name in SCENARIOS:
        add_arguments(name, every, prefix=True)
    helper = sub.add_parser("fetch-only")  # internal: the cpu scenario's ceiling, as a process
    for name in ("url", "start", "end", "chunk", "marker"):
        helper.add_argument(name)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:] or ["all"])
    if args.command is None:
        parser.error("choose a scenario")
    if args.command == "fetch-only":
        logs = fetch_only(args.url, int(args.start), int(args.end), int(args.chunk))
        Path(args.marker).write_text(str(logs))
        return
    names = list(SCENARIOS) if args.command == "all" else [args.command]
    for name in names:
        work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        try:
            print(SCENARIOS[name][1](args, work), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
