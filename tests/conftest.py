"""Shared fixtures: one real anvil node seeded with events, fault proxies, and row comparison."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

# The session's local S3 for the tests that ask for it, and the AWS environment pointing there.
from s3_fixtures import pytest_configure, pytest_unconfigure, s3  # noqa: F401

from pipeline.config.settings import build_config
from pipeline.dev.devnet import Anvil, find_anvil
from pipeline.dev.raycluster import TEST_ENV as RAY_TEST_ENV
from pipeline.dev.raycluster import LocalRayCluster
from pipeline.dev.seeding import SeedReport, seed_logs
from pipeline.dev.simulator import FaultProxy, Profile
from pipeline.dev.verify import node_logs, stored_logs
from pipeline.fetch.rpc import RpcClient
from pipeline.plan.chunks import ChunkPlan
from pipeline.run.api import RunResult, run_backfill
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


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalRayCluster]:
    """A Ray cluster of two nodes (a head and a worker node) on this machine, shared by every
    Ray test: starting one takes seconds. Its processes are stopped by their own ids."""
    saved = {name: os.environ.get(name) for name in RAY_TEST_ENV}
    os.environ.update(RAY_TEST_ENV)  # the drivers these tests start must match the nodes
    try:
        with LocalRayCluster(nodes=2, cpus=1) as cluster:
            yield cluster
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def backfill(output: Path, rpc: list[str], report=lambda event: None, **kwargs) -> RunResult:
    """Run the library API the way the CLI does, with test-friendly timeouts."""
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("stall_timeout", 15.0)
    return run_backfill(build_config(rpc=rpc, output=output, **kwargs), report=report)


def node_rows(node: Anvil, start: int, end: int, addresses=None, topics=None) -> list[tuple]:
    """The node's own eth_getLogs answer for the range, as comparable row tuples."""
    return as_tuples(node_logs(node.url, start, end, addresses or (), topics or ()))


def stored_rows(output: Path) -> list[tuple]:
    """Every row of every Parquet file under output, as comparable tuples (duplicates kept)."""
    return as_tuples(stored_logs(output / LOGS_DIR))


def as_tuples(table: pa.Table) -> list[tuple]:
    """Rows as tuples with bytes shown as 0x hex: readable diffs in test failures."""
    columns = [
        ["0x" + v.hex() if isinstance(v, bytes) else v for v in table[name].to_pylist()]
        for name in table.column_names
    ]
    return list(zip(*columns, strict=True))


def get_logs(client: RpcClient, filter_params: dict) -> list[dict]:
    """eth_getLogs through the tool's client; anything but a list of logs raises RpcError."""
    return client.logs_result(client.post("eth_getLogs", [filter_params]))


def plan_tasks(start: int, end: int, chunk_size: int) -> list:
    """All tasks of start..end at once, as the board would hand them out."""
    plan = ChunkPlan(start, end, chunk_size)
    return list(iter(plan.take, None))
