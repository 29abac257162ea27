"""Decoding cost against parsing cost, per log: `python -m bench.decode` (--help for sizes).

Synthetic ERC-20 Transfer logs (values: a third below 2^64, a third token amounts with 18
decimals, a third anything up to 2^256-1) as a compact eth_getLogs body, the shape a node sends.
Each body is parsed into a log_schema() table by the worker's parser (fastlogs, and the C parser
when it is built), then the table is decoded (pipeline.decode.columns.decode). CPU time per log
of each step is the best of a few rounds, so a busy machine counts less; the run's whole cost is
about 9 us of CPU per log today, and decoding Transfer should add at most a quarter of that.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from functools import partial

from pipeline.decode.columns import decode
from pipeline.decode.signature import parse_signature
from pipeline.fetch import fastlogs

TRANSFER = "Transfer(address indexed from, address indexed to, uint256 value)"
RUN_US_PER_LOG = 9.0  # CPU per log of a whole run today (fetch, parse, write)
CHAIN_ID = 1


def transfer_body(count: int, first_block: int, seed: int) -> bytes:
    """A JSON-RPC eth_getLogs answer with `count` Transfer logs."""
    rng = random.Random(seed)
    topic0 = parse_signature(TRANSFER).topic0
    logs = []
    for i in range(count):
        value = rng.choice(
            [rng.getrandbits(64), rng.randrange(10**15, 10**24), rng.getrandbits(256)]
        )
        block = first_block + i // 100
        logs.append(
            f'{{"address":"0x{rng.getrandbits(160):040x}","topics":["{topic0}",'
            f'"0x{rng.getrandbits(160):064x}","0x{rng.getrandbits(160):064x}"],'
            f'"data":"0x{value:064x}","blockNumber":"{block:#x}",'
            f'"transactionHash":"0x{rng.getrandbits(256):064x}","transactionIndex":"{i % 100:#x}",'
            f'"blockHash":"0x{block:064x}","logIndex":"{i % 100:#x}","removed":false}}'
        )
    return ('{"jsonrpc":"2.0","id":1,"result":[' + ",".join(logs) + "]}").encode()


def best_cpu(step: Callable[[], object], rounds: int) -> tuple[float, object]:
    """The least CPU time (all threads of the process) of `rounds` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(rounds):
        start = time.process_time()
        result = step()
        best = min(best, time.process_time() - start)
    return best, result


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, measure, print one line per step."""
    parser = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__)
    parser.add_argument("--logs", type=int, default=1_000_000, help="logs in all (default 1M)")
    parser.add_argument("--per-body", type=int, default=100_000, help="logs per response body")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per step; the best counts")
    args = parser.parse_args(argv)
    parsers = {"fastlogs (numpy)": fastlogs.body_to_table}
    try:
        from pipeline.fetch import nativelogs

        if nativelogs.NATIVE:
            parsers["nativelogs (C)"] = nativelogs.body_to_table
    except ImportError:  # not in every checkout
        pass
    spec = parse_signature(TRANSFER)
    steps = [*(f"parse, {name}" for name in parsers), "decode Transfer"]
    totals = {(step, hex_output): 0.0 for step in steps for hex_output in (False, True)}
    pieces = range(0, args.logs, args.per_body)
    print(f"{args.logs:,} Transfer logs in {len(pieces)} bodies of up to {args.per_body:,}")
    for start in pieces:  # one body at a time: memory stays that of one body
        body = transfer_body(min(args.per_body, args.logs - start), start // 100, seed=start)
        for hex_output in (False, True):
            for name, parse in parsers.items():
                seconds, table = best_cpu(partial(parse, body, CHAIN_ID, hex_output), args.rounds)
                totals[f"parse, {name}", hex_output] += seconds
            seconds, result = best_cpu(partial(decode, table, spec, hex_output), args.rounds)
            assert result.table.num_rows == table.num_rows and not result.failures
            totals["decode Transfer", hex_output] += seconds
    for hex_output in (False, True):
        for step in steps:
            _report(step, totals[step, hex_output], args.logs, hex_output)
        share = totals["decode Transfer", hex_output] / args.logs * 1e6 / RUN_US_PER_LOG
        print(f"  decode adds {share:.0%} to a run's ~{RUN_US_PER_LOG:g} us of CPU per log")


def _report(step: str, seconds: float, logs: int, hex_output: bool) -> None:
    spelling = "hex" if hex_output else "binary"
    per_log, rate = seconds / logs * 1e6, logs / seconds
    print(f"  {step:<28} {spelling:<6} {per_log:6.2f} us/log  {rate:12,.0f} logs/s")


if __name__ == "__main__":
    main()
