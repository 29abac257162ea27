"""Benchmarks (work in progress for issue 5): this tool against a bare fetch loop and cryo.

Every contender runs as its own process tree against the same seeded anvil; wall time and the
peak resident memory summed over the tree are measured from outside, and each output is checked
against the node's row count before any speed is reported.
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
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow.dataset as ds
import requests

from .devnet import Anvil, find_anvil
from .seeding import seed_logs

SAMPLE_S = 0.02
JSON = {"Content-Type": "application/json"}
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class Measurement:
    """One contender's run."""

    name: str
    seconds: float
    logs: int
    peak_rss_mb: float
    verified: bool

    @property
    def logs_per_second(self) -> float:
        """Throughput."""
        return self.logs / self.seconds if self.seconds else 0.0


def measure(name: str, command: list[str], count: callable, expected: int) -> Measurement:
    """Run `command`, sampling the RSS of its whole process tree; `count` reads its output."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(process.pid))
            done.wait(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed ({process.returncode}): {stderr.decode()[-500:]}")
    logs = count()
    return Measurement(name, seconds, logs, peak[0] / 2**20, logs == expected)


def _tree_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * PAGE
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


def fetch_only(url: str, start: int, end: int, chunk: int) -> int:
    """The ceiling: eth_getLogs over the range with orjson parsing and nothing else."""
    session = requests.Session()
    logs = 0
    for lo in range(start, end + 1, chunk):
        hi = min(end, lo + chunk - 1)
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
                "params": [{"fromBlock": hex(lo), "toBlock": hex(hi)}]}  # fmt: skip
        reply = session.post(url, data=orjson.dumps(body), timeout=60, headers=JSON)
        payload = orjson.loads(reply.content)
        if "result" not in payload:
            raise RuntimeError(f"eth_getLogs {lo}-{hi}: {payload}")
        logs += len(payload["result"])
    return logs


def parquet_rows(path: Path) -> callable:
    """A counter of the rows under `path`."""
    return lambda: ds.dataset(path, format="parquet").count_rows() if path.exists() else -1


def run_cpu_bound(logs: int, blocks: int, chunk: int, work: Path) -> list[Measurement]:
    """Seed anvil with `logs` logs and race the contenders straight against it."""
    with Anvil(find_anvil()) as node:
        seeded = seed_logs(node.url, blocks=blocks, logs=logs, seed=11)
        start, end = seeded.first_block, seeded.last_block
        python = sys.executable
        results = []
        marker = work / "fetch-only.count"
        results.append(
            measure(
                "fetch-only loop (ceiling)",
                [
                    python,
                    "-m",
                    "pipeline.bench",
                    "fetch-only",
                    node.url,
                    str(start),
                    str(end),
                    str(chunk),
                    str(marker),
                ],  # fmt: skip
                lambda: int(marker.read_text()),
                seeded.logs,
            )
        )
        for n in (1, 3):
            out = work / f"ours-{n}"
            rpc = [arg for i in range(n) for arg in ("--rpc", f"e{i}={node.url}")]
            command = [python, "-m", "pipeline", "backfill", *rpc, "--from-block", str(start),
                       "--to-block", str(end), "--chunk-size", str(chunk), "--output", str(out),
                       "--quiet", "--overwrite"]  # fmt: skip
            results.append(
                measure(
                    f"pipeline, {n} endpoint(s)", command, parquet_rows(out / "logs"), seeded.logs
                )  # fmt: skip
            )
        if _has_cryo():
            out = work / "cryo"
            code = (
                "import cryo; cryo.freeze('logs', rpc=%r, blocks=['%d:%d'], chunk_size=%d, "
                "output_dir=%r, no_verbose=True)" % (node.url, start, end + 1, chunk, str(out))
            )
            out.mkdir(parents=True, exist_ok=True)
            results.append(measure("cryo", [python, "-c", code], parquet_rows(out), seeded.logs))
        return results


def _has_cryo() -> bool:
    try:
        import cryo  # noqa: F401
    except ImportError:
        return False
    return True


def format_results(results: list[Measurement]) -> str:
    """The comparison table, with the machine's core count."""
    lines = [
        f"{os.cpu_count()} cores",
        "contender                   wall s     logs/s  peak RSS MB  rows ok",
    ]
    for r in results:
        lines.append(
            f"{r.name:<26} {r.seconds:7.2f} {r.logs_per_second:10,.0f} {r.peak_rss_mb:12.0f}  "
            f"{'yes' if r.verified else 'NO'}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """`python -m pipeline.bench cpu --logs N` (or the internal fetch-only helper)."""
    parser = argparse.ArgumentParser(description="Benchmarks against a local anvil.")
    sub = parser.add_subparsers(dest="command", required=True)
    cpu = sub.add_parser("cpu", help="CPU-bound: logs straight from anvil")
    cpu.add_argument("--logs", type=int, default=1_000_000)
    cpu.add_argument("--blocks", type=int, default=2_000)
    cpu.add_argument("--chunk-size", type=int, default=20)
    helper = sub.add_parser("fetch-only")
    for name in ("url", "start", "end", "chunk", "marker"):
        helper.add_argument(name)
    args = parser.parse_args(argv)
    if args.command == "fetch-only":
        logs = fetch_only(args.url, int(args.start), int(args.end), int(args.chunk))
        Path(args.marker).write_text(str(logs))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        print(format_results(run_cpu_bound(args.logs, args.blocks, args.chunk_size, work)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
