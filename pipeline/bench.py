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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow.dataset as ds
import requests

from .devnet import Anvil, find_anvil
from .seeding import seed_logs

SAMPLE_S = 0.02
JSON = {"Content-Type": "application/json"}


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


def measure(name: str, command: list[str], count: Callable[[], int], expected: int) -> Measurement:
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
    """Memory of `root` and all its descendants (Linux /proc), as PSS: forked children share
    pages with their parent, and summing plain RSS would count those pages once per process."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _pss(pid)
        stack += children.get(pid, [])
    return total


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def fetch_only(url: str, start: int, end: int, chunk: int) -> int:
    """The ceiling: eth_getLogs over the range with orjson parsing and nothing else."""
    session = requests.Session()
    logs = 0
    for lo in range(start, end + 1, chunk):
        hi = min(end, lo + chunk - 1)
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getLogs",
            "params": [{"fromBlock": hex(lo), "toBlock": hex(hi)}],
        }
        reply = session.post(url, data=orjson.dumps(body), timeout=60, headers=JSON)
        payload = orjson.loads(reply.content)
        if "result" not in payload:
            raise RuntimeError(f"eth_getLogs {lo}-{hi}: {payload}")
        logs += len(payload["result"])
    return logs


def parquet_rows(path: Path) -> Callable[[], int]:
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
                ],
                lambda: int(marker.read_text()),
                seeded.logs,
            )
        )
        for n in (1, 3):
            out = work / f"ours-{n}"
            rpc = [arg for i in range(n) for arg in ("--rpc", f"e{i}={node.url}")]
            command = [
                python,
                "-m",
                "pipeline",
                "backfill",
                *rpc,
                "--from-block",
                str(start),
                "--to-block",
                str(end),
                "--chunk-size",
                str(chunk),
                "--output",
                str(out),
                "--quiet",
                "--overwrite",
            ]
            results.append(
                measure(
                    f"pipeline, {n} endpoint(s)", command, parquet_rows(out / "logs"), seeded.logs
                )
            )
        if _has_cryo():
            out = work / "cryo"
            code = (
                f"import cryo; cryo.freeze('logs', rpc={node.url!r}, blocks=['{start}:{end + 1}'], "
                f"chunk_size={chunk}, output_dir={str(out)!r}, no_verbose=True)"
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
