"""The eth_getLogs body -> Arrow table step alone, by each candidate parser, on real anvil bodies:
`python -m bench.parsers` (--help for sizes).

A seeded anvil answers eth_getLogs over ranges of about 1k, 20k and 100k logs; each contender
turns the same raw bodies into a log_schema() table, timed in this process (best of several runs,
so the noise of a shared machine counts less), and its table is compared with .equals() to the
numpy parser's (fastlogs, what the worker runs today) and the careful path's (orjson + convert).
A contender whose table differs is reported as such, whatever its speed. The extra memory each
one needs on the largest body is measured in a fresh process per contender (peak RSS above the
body already in memory).

Contenders: numpy (fastlogs.body_to_table on the whole body, and in 16 MiB pieces as the worker
calls it today: the "vs today" ratios, on the largest body, are to that one), the careful path,
msgspec (typed Structs, then columns), polars (read_json of the result array, str.decode("hex")),
DuckDB (read_json of the array, written to /dev/shm as it reads files) and the C extension
(pipeline/fetch/_fastlogs.c via nativelogs). msgspec and polars are measured only when installed;
they are no dependency of the project.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from itertools import repeat
from operator import attrgetter
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import requests

from bench.measure import machine_line
from pipeline.dev.devnet import Anvil, find_anvil
from pipeline.dev.seeding import seed_logs
from pipeline.fetch import fastlogs, nativelogs
from pipeline.fetch.classify import decode_response
from pipeline.fetch.convert import (
    ADDRESS_BYTES,
    HASH_BYTES,
    TIMESTAMP_TYPE,
    log_schema,
    logs_to_table,
)
from pipeline.fetch.validate import check_not_removed
from pipeline.report.table import render_table

SEED = 11
CHAIN_ID = 31337
PIECE_BYTES = 16 * 2**20  # the worker's PARSE_PIECE_BYTES
MIN_RUNS, MAX_RUNS = 5, 20  # per contender and body; the best run counts
JSON_HEADERS = {"Content-Type": "application/json"}
Parser = Callable[[bytes, int, bool], pa.Table | None]


# --- contenders -----------------------------------------------------------------------------


def careful(body: bytes, chain_id: int, hex_output: bool) -> pa.Table:
    """The careful path, as the worker runs it on a body the fast path refused."""
    logs = decode_response(200, {}, body)
    check_not_removed(logs)
    return logs_to_table(logs, chain_id, hex_output)


def numpy_in_pieces(body: bytes, chain_id: int, hex_output: bool) -> pa.Table | None:
    """The numpy parser as the worker calls it today."""
    return fastlogs.body_to_table_in_pieces(body, chain_id, hex_output, PIECE_BYTES)


def c_extension(body: bytes, chain_id: int, hex_output: bool) -> pa.Table | None:
    """The C parser alone (no numpy fallback: a refusal shows as None)."""
    return nativelogs.native_table(body, chain_id, hex_output)


@cache
def _msgspec_decoder():  # built on first use: msgspec is optional
    import msgspec

    strings = ("blockNumber", "blockHash", "transactionIndex", "transactionHash", "logIndex",
               "address")  # fmt: skip
    fields = [*((name, str) for name in strings), ("topics", list[str]), ("data", str)]
    optional = [("removed", bool | None, None), ("blockTimestamp", str | None, None)]
    log = msgspec.defstruct("Log", [*fields, *optional])
    response = msgspec.defstruct("Response", [("result", list[log])])
    return msgspec.json.Decoder(response)


def msgspec_table(body: bytes, chain_id: int, hex_output: bool) -> pa.Table:
    """msgspec decoding into typed Structs (one per log), then column by column as convert does."""
    logs = _msgspec_decoder().decode(body).result
    if any(map(attrgetter("removed"), logs)):
        raise ValueError("a removed log")

    def strings(name: str) -> list[str]:
        return list(map(attrgetter(name), logs))

    def quantities(name: str, arrow_type: pa.DataType) -> pa.Array:
        return pa.array(list(map(int, strings(name), repeat(16))), arrow_type)

    topics = strings("topics")
    hexes = [
        *(strings(name) for name in ("blockHash", "transactionHash", "address")),
        *([t[i] if len(t) > i else None for t in topics] for i in range(4)),
    ]
    sizes = [HASH_BYTES, HASH_BYTES, ADDRESS_BYTES, *[HASH_BYTES] * 4]
    block_hash, tx_hash, address, *topic_columns = map(_hex_column, hexes, sizes, [hex_output] * 7)
    stamps = [None if s in (None, "0x0") else int(s, 16) for s in strings("blockTimestamp")]
    columns = [
        quantities("blockNumber", pa.uint64()), pa.array(stamps, TIMESTAMP_TYPE), block_hash,
        quantities("transactionIndex", pa.uint32()), tx_hash,
        quantities("logIndex", pa.uint32()), address, *topic_columns,
        _hex_column(strings("data"), 0, hex_output),
        pa.repeat(pa.scalar(chain_id, pa.uint64()), len(logs)),
    ]  # fmt: skip
    return pa.Table.from_arrays(columns, schema=log_schema(hex_output))


def _hex_column(values: list[str | None], size: int, hex_output: bool) -> pa.Array:
    """0x strings (None: null) as bytes, or lowercased with hex_output; `size` 0: any length."""
    strings = pa.array(values, pa.string())
    lengths = pc.utf8_length(strings)
    if size and not pc.all(pc.equal(lengths, 2 + 2 * size), min_count=0).as_py():
        raise ValueError("a value of the wrong width")
    if hex_output:
        return pc.utf8_lower(strings)
    raw = bytes.fromhex("".join(v[2:] for v in values if v is not None))
    halves = pc.divide(pc.subtract(lengths.fill_null(2), 2), 2).cast(pa.int32())
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(halves)])
    validity = strings.buffers()[0]
    return pa.Array.from_buffers(
        pa.binary(), len(values), [validity, offsets.buffers()[1], pa.py_buffer(raw)]
    )


# The keys polars and DuckDB read (strings, but topics: a list of strings); others are skipped.
_LOG_KEYS = ("blockNumber", "blockHash", "transactionIndex", "transactionHash", "logIndex",
             "address", "topics", "data", "blockTimestamp")  # fmt: skip


def polars_table(body: bytes, chain_id: int, hex_output: bool) -> pa.Table:
    """polars read_json of the result array (located as fastlogs does), hex decoded by polars."""
    import polars as pl

    start, end = fastlogs._result_span(body)
    schema = {key: pl.List(pl.String) if key == "topics" else pl.String for key in _LOG_KEYS}
    frame = pl.read_json(body[start - 1 : end + 1], schema=schema)

    def hex_expr(expr: pl.Expr) -> pl.Expr:
        return expr.str.to_lowercase() if hex_output else expr.str.slice(2).str.decode("hex")

    exprs = {
        "block_number": pl.col("blockNumber").str.slice(2).str.to_integer(base=16, dtype=pl.UInt64),
        # A zero timestamp is no timestamp (the worker fills it from the block's header).
        "block_timestamp": pl.from_epoch(
            pl.col("blockTimestamp").str.slice(2).str.to_integer(base=16).replace(0, None),
            time_unit="s",
        ).dt.replace_time_zone("UTC"),
        "block_hash": hex_expr(pl.col("blockHash")),
        "transaction_index": pl.col("transactionIndex")
        .str.slice(2)
        .str.to_integer(base=16, dtype=pl.UInt32),
        "transaction_hash": hex_expr(pl.col("transactionHash")),
        "log_index": pl.col("logIndex").str.slice(2).str.to_integer(base=16, dtype=pl.UInt32),
        "address": hex_expr(pl.col("address")),
        **{f"topic{i}": hex_expr(pl.col("topics").list.get(i, null_on_oob=True)) for i in range(4)},
        "data": hex_expr(pl.col("data")),
        "chain_id": pl.lit(chain_id, dtype=pl.UInt64),
    }
    table = frame.select(**exprs).to_arrow()
    return table.cast(log_schema(hex_output))


def duckdb_table(body: bytes, chain_id: int, hex_output: bool) -> pa.Table:
    """DuckDB read_json of the result array, written to a tmpfs file (DuckDB reads files)."""
    import duckdb

    start, end = fastlogs._result_span(body)
    with tempfile.NamedTemporaryFile(dir=_tmpfs(), suffix=".json") as file:
        file.write(memoryview(body)[start - 1 : end + 1])
        file.flush()
        sql = _duckdb_sql(file.name, chain_id, hex_output)
        with duckdb.connect() as connection:
            table = connection.sql(sql).to_arrow_table()
    return table.cast(log_schema(hex_output))


def _duckdb_sql(path: str, chain_id: int, hex_output: bool) -> str:
    columns = ", ".join(
        f"{key}: '{'VARCHAR[]' if key == 'topics' else 'VARCHAR'}'" for key in _LOG_KEYS
    )

    def hexed(expr: str) -> str:
        return f"lower({expr})" if hex_output else f"from_hex(substr({expr}, 3))"

    return f"""
        SELECT blockNumber::UBIGINT AS block_number,
            to_timestamp(nullif(blockTimestamp::UBIGINT, 0)) AS block_timestamp,
            {hexed("blockHash")} AS block_hash,
            transactionIndex::UINTEGER AS transaction_index,
            {hexed("transactionHash")} AS transaction_hash, logIndex::UINTEGER AS log_index,
            {hexed("address")} AS address,
            {", ".join(f"{hexed(f'topics[{i + 1}]')} AS topic{i}" for i in range(4))},
            {hexed("data")} AS data, {chain_id}::UBIGINT AS chain_id
        FROM read_json('{path}', format = 'array', records = true, columns = {{{columns}}},
                       maximum_object_size = 1000000000)
    """


def _tmpfs() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


@dataclass(frozen=True)
class Contender:
    """One way from body to table; `needs` names the module it must find installed."""

    name: str
    parse: Parser
    needs: str | None = None

    def available(self) -> bool:
        """Whether it can run on this machine."""
        if self.name == "C extension":
            return nativelogs.NATIVE
        return self.needs is None or importlib.util.find_spec(self.needs) is not None


CONTENDERS = (
    Contender("numpy, whole body", fastlogs.body_to_table),
    Contender("numpy, 16 MiB pieces", numpy_in_pieces),  # what the worker runs today
    Contender("careful (orjson+convert)", careful),
    Contender("msgspec", msgspec_table, "msgspec"),
    Contender("polars", polars_table, "polars"),
    Contender("duckdb", duckdb_table, "duckdb"),
    Contender("C extension", c_extension),
)
TODAY = CONTENDERS[1]  # the ratios are to what the worker runs today


# --- bodies ---------------------------------------------------------------------------------


@dataclass
class Body:
    """One raw eth_getLogs answer from the node, and the reference tables for it."""

    label: str
    raw: bytes
    logs: int
    reference: dict[bool, pa.Table] = field(default_factory=dict)  # numpy's, per hex_output
    careful: dict[bool, pa.Table] = field(default_factory=dict)


def get_logs_body(session: requests.Session, url: str, lo: int, hi: int) -> bytes:
    """The node's raw answer to eth_getLogs over blocks lo..hi."""
    params = [{"fromBlock": hex(lo), "toBlock": hex(hi)}]
    request = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": params}
    reply = session.post(url, data=orjson.dumps(request), headers=JSON_HEADERS, timeout=300)
    reply.raise_for_status()
    return reply.content


def fetch_bodies(url: str, first: int, last: int, sizes: list[int]) -> list[Body]:
    """Bodies of about each size in logs: the shortest ranges from `first` that hold them."""
    with requests.Session() as session:
        whole = fastlogs.body_to_table(get_logs_body(session, url, first, last), CHAIN_ID, False)
        if whole is None:
            raise RuntimeError("the numpy parser refused the node's answer")
        blocks = whole["block_number"].to_numpy()
        per_block = np.cumsum(np.bincount(blocks - first, minlength=last - first + 1))
        bodies = []
        for size in sizes:
            upto = min(int(np.searchsorted(per_block, size)), last - first)
            raw = get_logs_body(session, url, first, first + upto)
            logs = int(per_block[upto])
            bodies.append(Body(f"~{_short(size)} logs", raw, logs))
    return bodies


def _short(count: int) -> str:
    return f"{count // 1000}k" if count >= 1000 and count % 1000 == 0 else str(count)


# --- timing ---------------------------------------------------------------------------------


@dataclass
class Result:
    """A contender on one body: the best time, and whether its table was the same."""

    seconds: float | None
    same: str  # "yes", or what differs


def time_one(contender: Contender, body: Body, hex_output: bool, runs: int) -> Result:
    """Best of `runs` timings of the body -> table step, and the comparison of its table."""
    best, table = float("inf"), None
    for _ in range(runs):
        gc.collect()
        began = time.perf_counter()
        try:
            table = contender.parse(body.raw, CHAIN_ID, hex_output)
        except Exception as exc:  # a contender that fails is reported, not fatal
            return Result(None, f"failed: {type(exc).__name__}: {exc}"[:80])
        best = min(best, time.perf_counter() - began)
        if table is None:
            return Result(None, "refused the body")
    return Result(best, _compare(table, body, hex_output))


def _compare(table: pa.Table, body: Body, hex_output: bool) -> str:
    same_numpy = table.equals(body.reference[hex_output])
    same_careful = table.equals(body.careful[hex_output])
    if same_numpy and same_careful:
        return "yes"
    if table.schema != log_schema(hex_output):
        return "NO: another schema"
    differs = [
        name
        for name in table.column_names
        if not table[name].equals(body.reference[hex_output][name])
    ]
    return f"NO: {', '.join(differs) or 'differs from careful'}"


def runs_for(body: Body, budget_logs: int) -> int:
    """More runs for small bodies: each contender gets about the same time per size."""
    return max(MIN_RUNS, min(MAX_RUNS, budget_logs // max(body.logs, 1)))


def measure_all(
    contenders: list[Contender], bodies: list[Body], hex_output: bool, budget: int
) -> dict[str, list[Result]]:
    """Every contender on every body, with the reference tables made first."""
    for body in bodies:
        body.reference[hex_output] = fastlogs.body_to_table(body.raw, CHAIN_ID, hex_output)
        body.careful[hex_output] = careful(body.raw, CHAIN_ID, hex_output)
        if not body.reference[hex_output].equals(body.careful[hex_output]):
            raise RuntimeError(f"numpy and careful tables differ on {body.label}")
    return {
        c.name: [time_one(c, body, hex_output, runs_for(body, budget)) for body in bodies]
        for c in contenders
    }


def speed_table(results: dict[str, list[Result]], bodies: list[Body]) -> str:
    """logs/s and MB/s per contender and body, and whether every table was the same."""
    head = ["contender"]
    for body in bodies:
        head += [f"{body.label} logs/s", "MB/s"]
    head += ["vs today", "same table?"]
    today = results[TODAY.name][-1].seconds
    rows = []
    for name, row in results.items():
        cells: list[str] = [name]
        for body, result in zip(bodies, row, strict=True):
            if result.seconds is None:
                cells += ["-", "-"]
            else:
                cells += [
                    f"{body.logs / result.seconds:,.0f}",
                    f"{len(body.raw) / result.seconds / 1e6:,.0f}",
                ]
        last = row[-1].seconds
        cells.append(f"{today / last:.1f}x" if last and today else "-")
        verdicts = {r.same for r in row}
        cells.append("yes" if verdicts == {"yes"} else "; ".join(sorted(verdicts - {"yes"})))
        rows.append(cells)
    return render_table(head, rows, left=(0, len(head) - 1))


# --- memory ---------------------------------------------------------------------------------


def peak_extra_mb(name: str, path: Path, hex_output: bool) -> tuple[float, float]:
    """Peak RSS a contender adds to a process that holds the body: (MB, times the body)."""
    command = [sys.executable, "-m", "bench.parsers", "--memory-probe", name, str(path)]
    if hex_output:
        command.append("--hex-output")
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    extra_kb, body_bytes = float(out[0]), float(out[1])
    return extra_kb / 1024, extra_kb * 1024 / body_bytes


def memory_probe(name: str, path: str, hex_output: bool) -> None:
    """In a fresh process: warm the contender up on a tiny body, then parse the big one and print
    the peak RSS it added (kB) and the body's size."""
    contender = next(c for c in CONTENDERS if c.name == name)
    body = Path(path).read_bytes()
    tiny = body[: body.find(b"},{") + 1] + b"]}"
    contender.parse(tiny, CHAIN_ID, hex_output)
    gc.collect()
    before = _peak_rss_kb()
    table = contender.parse(body, CHAIN_ID, hex_output)
    after = _peak_rss_kb()
    del table
    print(after - before, len(body))


def _peak_rss_kb() -> int:
    # VmHWM, not ru_maxrss: that one starts at the parent's peak, as exec keeps it.
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


def memory_table(contenders: list[Contender], body: Body, hex_output: bool) -> str:
    """Peak extra memory per contender on one body, each in its own process."""
    rows = []
    with tempfile.NamedTemporaryFile(dir=_tmpfs(), suffix=".json") as file:
        file.write(body.raw)
        file.flush()
        for c in contenders:
            try:
                mb, ratio = peak_extra_mb(c.name, Path(file.name), hex_output)
                rows.append([c.name, f"{mb:,.0f}", f"{ratio:.2f}x"])
            except subprocess.CalledProcessError as exc:
                rows.append([c.name, "-", f"failed: {exc.stderr.strip().splitlines()[-1][:60]}"])
    head = ["contender", "peak extra MB", "x body"]
    return render_table(head, rows)


# --- main -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Seed anvil, fetch the bodies, time every contender and print the tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.parsers", description=__doc__)
    parser.add_argument("--logs", type=int, default=200_000, help="logs to seed (%(default)s)")
    parser.add_argument("--blocks", type=int, default=1_000, help="blocks to seed (%(default)s)")
    parser.add_argument(
        "--sizes", default="1000,20000,100000", help="body sizes in logs (%(default)s)"
    )
    parser.add_argument(
        "--budget", type=int, default=500_000, help="logs parsed per contender per size (runs)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("--memory-probe", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--hex-output", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        memory_probe(*args.memory_probe, args.hex_output)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    with Anvil(find_anvil()) as node:
        seeded = seed_logs(node.url, blocks=args.blocks, logs=args.logs, seed=SEED)
        bodies = fetch_bodies(node.url, seeded.first_block, seeded.last_block, sizes)
    contenders = [c for c in CONTENDERS if c.available()]
    missing = [c.name for c in CONTENDERS if not c.available()]
    print(
        f"== parsers: eth_getLogs body -> log_schema() table; anvil seeded with {seeded.logs:,} "
        f"logs; bodies: "
        + ", ".join(f"{b.logs:,} logs / {len(b.raw) / 1e6:.1f} MB" for b in bodies)
    )
    runs = f"best of {args.budget:,} logs' worth of runs ({MIN_RUNS}-{MAX_RUNS}) per cell"
    print(f"{machine_line()}; {runs}; duckdb and polars may use every core, the others one")
    if missing:
        print("not installed, skipped: " + ", ".join(missing))
    for hex_output in (False, True):
        measured = bodies if not hex_output else bodies[-1:]  # hex_output: the largest body
        results = measure_all(contenders, measured, hex_output, args.budget)
        title = "binary columns" if not hex_output else f"hex_output, {bodies[-1].label} only"
        print(f"\n-- {title}")
        print(speed_table(results, measured))
    if not args.no_memory:
        for hex_output in (False, True):
            size = f"{len(bodies[-1].raw) / 1e6:.0f} MB"
            print(f"\n-- peak memory on the {bodies[-1].label} body ({size}), "
                  f"hex_output={hex_output}, each in a fresh process")  # fmt: skip
            print(memory_table(contenders, bodies[-1], hex_output))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
