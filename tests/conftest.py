"""Shared fixtures: one real anvil node seeded with events, fault proxies, and row comparison."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from pipeline.config.settings import build_config
from pipeline.dev.devnet import Anvil, find_anvil
from pipeline.dev.seeding import SeedReport, seed_logs
from pipeline.dev.simulator import FaultProxy, Profile
from pipeline.run.supervisor import RunResult, run_backfill
from pipeline.store.layout import LOGS_DIR

SEED_BLOCKS = 3000
SEED_LOGS = 60_000


@pytest.fixture(scope="session")
def node() -> Iterator[Anvil]:
    """A real anvil node on a free loopback port."""
    with Anvil(find_anvil()) as anvil:
        yield anvil


@pytest.fixture(scope="session")
def seeded(node: Anvil) -> SeedReport:
    """The node after seeding >= 50k logs over a few thousand blocks."""
    report = seed_logs(node.url, blocks=SEED_BLOCKS, logs=SEED_LOGS, seed=1)
    assert report.logs >= 50_000
    return report


@pytest.fixture
def proxy(node: Anvil) -> Iterator[Callable[..., FaultProxy]]:
    """Factory for fault proxies in front of the node; all are stopped after the test."""
    started: list[FaultProxy] = []

    def make(profile: Profile | None = None, **fields) -> FaultProxy:
        started.append(FaultProxy(node.url, profile or Profile(**fields)).start())
        return started[-1]

    yield make
    for p in started:
        p.stop()


def backfill(output: Path, rpc: list[str], report=lambda event: None, **kwargs) -> RunResult:
    """Run the library API the way the CLI does, with test-friendly timeouts."""
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("stall_timeout", 15.0)
    return run_backfill(build_config(rpc=rpc, output=output, **kwargs), report=report)


def node_rows(node: Anvil, start: int, end: int, addresses=None, topics=None) -> list[tuple]:
    """The node's own eth_getLogs answer for the range, as comparable row tuples."""
    params: dict = {"fromBlock": hex(start), "toBlock": hex(end)}
    if addresses:
        params["address"] = addresses
    if topics:
        params["topics"] = topics
    logs = node.rpc("eth_getLogs", [params])
    return sorted(
        (
            int(log["blockNumber"], 16),
            int(log["logIndex"], 16),
            log["blockHash"],
            int(log["transactionIndex"], 16),
            log["transactionHash"],
            log["address"].lower(),
            *(log["topics"] + [None] * (4 - len(log["topics"]))),
            log["data"],
        )
        for log in logs
    )


def stored_rows(output: Path) -> list[tuple]:
    """Every row of every Parquet file under output, as comparable tuples (duplicates kept)."""
    table = ds.dataset(output / LOGS_DIR, format="parquet").to_table()

    def hx(value):
        return value if value is None or isinstance(value, str) else "0x" + value.hex()

    return sorted(
        (
            row["block_number"],
            row["log_index"],
            hx(row["block_hash"]),
            row["transaction_index"],
            hx(row["transaction_hash"]),
            hx(row["address"]),
            *(hx(row[f"topic{i}"]) for i in range(4)),
            hx(row["data"]),
        )
        for row in table.to_pylist()
    )
