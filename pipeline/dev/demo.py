"""Local mode: a real anvil node, seeded with events, behind simulated providers."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click
import pyarrow.parquet as pq

from pipeline.config.settings import build_config
from pipeline.dev.devnet import Anvil, find_anvil
from pipeline.dev.seeding import seed_logs
from pipeline.dev.simulator import PROFILES, FaultProxy
from pipeline.dev.verify import compare, node_logs, stored_logs
from pipeline.errors import ConfigError
from pipeline.report.console import PlainConsole
from pipeline.report.verdict import print_result
from pipeline.run.api import RunResult, run_backfill
from pipeline.store.layout import EVENTS_DIR, LOGS_DIR, SUMMARY_FILE, TIMELINE_FILE
from pipeline.store.target import FsStore, LocalStore, open_store

DEMO_PROVIDERS = ("fast", "medium", "slow-flaky")
DEMO_CHUNK_SIZE = 50
PROFILE_CHUNK_SIZE = 500  # wide enough that range and result caps bite
DEMO_SEED = 7
# The seeded contracts' events (pipeline.dev.seeding.EMITTERS), decoded into OUT/events/; the
# anonymous one has no selector, so the filter they set leaves its logs out.
DEMO_EVENTS = (
    "Transfer(address indexed from, address indexed to, uint256 value)",
    "Tick(uint256 count, uint256 mixed)",
    "Poke(address indexed caller)",
    "Swap(address indexed sender, uint256 indexed count, uint256 indexed mixed, uint256 amount)",
)
SHOWN_ROWS = 3


def run_demo(
    output: Path | str,
    *,
    logs: int,
    blocks: int,
    console: PlainConsole,
    profiles: tuple[str, ...] = (),
    chunk_size: int | None = None,
) -> RunResult:
    """Start anvil, seed it, put simulated providers (`profiles`, default three of mixed speed)
    in front, backfill, and verify the rows against the node. `output` is a folder or an
    object-storage URI (store.uri.parse_output)."""
    store = open_store(output)
    unknown = [name for name in profiles if name not in PROFILES]
    if unknown:
        raise ConfigError(
            f"unknown profile {unknown[0]!r}: see pipeline demo --list-profiles for the names"
        )
    chunk_size = chunk_size or (PROFILE_CHUNK_SIZE if profiles else DEMO_CHUNK_SIZE)
    say = click.echo
    say("starting a local anvil node ...")
    with Anvil(find_anvil()) as node, contextlib.ExitStack() as proxies:
        say(f"seeding about {logs:,} logs over {blocks:,} blocks ...")
        seeded = seed_logs(node.url, blocks=blocks, logs=logs, seed=DEMO_SEED)
        say(f"seeded {seeded.logs:,} logs in {seeded.transactions:,} transactions")
        urls = []
        for name in profiles or DEMO_PROVIDERS:
            proxy = proxies.enter_context(FaultProxy(node.url, PROFILES[name]))
            urls.append(f"{name}={proxy.url}")
            say(f"provider {name}: {proxy.url} ({PROFILES[name].description})")
        config = build_config(
            rpc=urls,
            from_block=seeded.first_block,
            to_block=seeded.last_block,
            chunk_size=chunk_size,
            output=output,
            overwrite=True,
            events=DEMO_EVENTS,
        )
        with console:
            result = run_backfill(config, report=console)
        print_result(result)
        topics = [list(values) for values in config.log_filter.topics]
        expected = node_logs(node.url, seeded.first_block, seeded.last_block, topics=topics)
        stored = _stored_logs(store)
        same = compare(expected, stored)
        verdict = "matches" if same == "yes" else f"DOES NOT MATCH ({same})"
        total = expected.num_rows
        say(f"verified: {stored.num_rows:,} rows stored, {verdict} the {total:,} logs on the node")
    _show_events(store, result.summary.get("events", []))
    _explain(store)
    return result


def _stored_logs(store: LocalStore | FsStore):
    if isinstance(store, FsStore):
        return stored_logs(store.path(LOGS_DIR), filesystem=store.fs)
    return stored_logs(store.root / LOGS_DIR)


def _read_table(store: LocalStore | FsStore, key: str):
    if isinstance(store, FsStore):
        return pq.read_table(store.path(key), filesystem=store.fs)
    return pq.read_table(store.location(key))


def _show_events(store: LocalStore | FsStore, events: list[dict]) -> None:
    """Each decoded table's size and its first rows, 0x hex for bytes."""
    for event in events:
        click.echo(
            f"\n{event['folder']}: {event['rows']:,} rows, "
            f"{event['decode_failures']:,} decode failures ({event['signature']})"
        )
        files = [n for n in store.names(event["folder"]) if n.endswith(".parquet")]
        if not files:
            continue
        head = _read_table(store, f"{event['folder']}/{files[0]}").slice(0, SHOWN_ROWS).to_pylist()
        for row in head:
            click.echo("  " + ", ".join(f"{k}={_shown(v)}" for k, v in row.items()))


def _shown(value: object) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)


def profile_list() -> str:
    """Every simulator profile with its one-line description."""
    width = max(map(len, PROFILES))
    return "\n".join(f"{name.ljust(width)}  {p.description}" for name, p in PROFILES.items())


def _explain(store: LocalStore | FsStore) -> None:
    output = store.uri
    logs, transfers = f"{output}/{LOGS_DIR}/*.parquet", f"{output}/{EVENTS_DIR}/Transfer/*.parquet"
    chart = store.shown(TIMELINE_FILE)
    if not store.exists(TIMELINE_FILE):
        chart = "install the charts extra (.venv/bin/pip install -e '.[charts]') to get one"
    click.echo(
        f"""
Read the tables in Python (pip install duckdb pandas):
  import duckdb
  duckdb.sql("SELECT address, count(*) FROM read_parquet('{logs}') GROUP BY 1").show()
  duckdb.sql("SELECT date_trunc('day', block_timestamp) AS day, count(*), sum(value_f64)
              FROM read_parquet('{transfers}') GROUP BY 1 ORDER BY 1").show()
  import pandas as pd; df = pd.read_parquet("{store.shown(LOGS_DIR)}")
Per-endpoint statistics and decode counts: {store.shown(SUMMARY_FILE)}
Requests over time per endpoint: {chart}"""
    )
