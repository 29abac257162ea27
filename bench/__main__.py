"""Benchmarks against a local anvil: `python -m bench [cpu|provider|scaling|all]`.

Every contender runs as its own process tree; wall time, peak memory (PSS summed over the tree)
and CPU time are measured from outside (bench.measure), and each output is compared row by row
with the node's own eth_getLogs answer (pipeline.dev.verify) before any speed is reported. The
scenarios live in bench.scenarios.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import requests

from bench.scenarios import SCENARIOS, add_arguments, flags_epilog
from pipeline.dev.verify import get_logs


def fetch_only(url: str, start: int, end: int, chunk: int) -> int:
    """The ceiling: eth_getLogs over the range with orjson parsing and nothing else."""
    with requests.Session() as session:
        return sum(
            len(get_logs(session, url, lo, min(end, lo + chunk - 1)))
            for lo in range(start, end + 1, chunk)
        )


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the chosen scenarios (all of them at quick sizes when
    there are no arguments)."""

    parser = argparse.ArgumentParser(
        prog="python -m bench",
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
