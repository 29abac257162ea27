"""Benchmarks against a local anvil: `python -m bench [cpu|provider|scaling|all]`.

Every contender runs as its own process tree; wall time, peak memory (PSS summed over the tree)
and CPU time are measured from outside (bench_measure), and each output is compared row by row
with the node's own eth_getLogs answer (here) before any speed is reported. The scenarios live
in bench_scenarios.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import requests

from bench.measure import Measurement

JSON = {"Content-Type": "application/json"}
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
NODE_READ_BLOCKS = 200  # blocks per eth_getLogs when reading the node's own answer


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
    from bench.scenarios import SCENARIOS, add_arguments, flags_epilog  # imports this module

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
