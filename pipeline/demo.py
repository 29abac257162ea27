"""Local mode: a real anvil node, seeded with events, behind three simulated providers."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click
import pyarrow.dataset as ds

from .cli import print_result
from .config import build_config
from .devnet import Anvil, find_anvil
from .naming import LOGS_DIR
from .run import Report, RunResult, run_backfill
from .seeding import seed_logs
from .simulator import PROFILES, FaultProxy

DEMO_PROVIDERS = ("fast", "medium", "slow-flaky")
DEMO_CHUNK_SIZE = 50
DEMO_SEED = 7


def run_demo(output: Path, *, logs: int, blocks: int, report: Report) -> RunResult:
    """Start anvil, seed it, put the simulated providers in front, backfill, and verify."""
    say = click.echo
    say("starting a local anvil node ...")
    with Anvil(find_anvil()) as node, contextlib.ExitStack() as proxies:
        say(f"seeding about {logs:,} logs over {blocks:,} blocks ...")
        seeded = seed_logs(node.url, blocks=blocks, logs=logs, seed=DEMO_SEED)
        say(f"seeded {seeded.logs:,} logs in {seeded.transactions:,} transactions")
        urls = []
        for name in DEMO_PROVIDERS:
            proxy = proxies.enter_context(FaultProxy(node.url, PROFILES[name]))
            urls.append(f"{name}={proxy.url}")
            say(f"provider {name}: {proxy.url} ({_describe(PROFILES[name])})")
        config = build_config(
            rpc=urls,
            from_block=seeded.first_block,
            to_block=seeded.last_block,
            chunk_size=DEMO_CHUNK_SIZE,
            output=output,
            overwrite=True,
        )
        result = run_backfill(config, report=report)
        print_result(result)
        stored = ds.dataset(output / LOGS_DIR, format="parquet").count_rows()
        verdict = "matches" if stored == seeded.logs else "DOES NOT MATCH"
        say(f"verified: {stored:,} rows stored, {verdict} the {seeded.logs:,} logs on the node")
    _explain(output)
    return result


def _describe(profile) -> str:
    low, high = profile.latency_ms
    failing = f", {profile.failure_rate:.0%} of requests fail" if profile.failure_rate else ""
    return f"{low:.0f}-{high:.0f} ms{failing}"


def _explain(output: Path) -> None:
    glob = f"{output}/**/*.parquet"
    click.echo(
        f"""
Read the logs in Python (pip install duckdb pandas):
  import duckdb
  duckdb.sql("SELECT address, count(*) FROM read_parquet('{glob}') GROUP BY 1").show()
  import pandas as pd; df = pd.read_parquet("{output / LOGS_DIR}")
Per-endpoint statistics: {output / "summary.json"}"""
    )
