"""End to end against node implementations other than anvil: hardhat's node and ganache. Their
logs carry no blockTimestamp, they have no eth_getBlockReceipts (each refuses it in its own
words), ganache gives many blocks one timestamp, and both call their head "finalized"."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import backfill, node_rows
from helpers import assert_equals_node

from pipeline.dev.othernodes import IMPLEMENTATIONS, OtherNode
from pipeline.dev.seeding import EMITTERS, SeedReport, seed_logs
from pipeline.dev.simulator import PROFILES, FaultProxy

Seeded = tuple[OtherNode, SeedReport]


@pytest.fixture(scope="module", params=sorted(IMPLEMENTATIONS))
def other(request) -> Seeded:
    with OtherNode(request.param) as node:
        yield node, seed_logs(node.url, blocks=200, logs=2_000, seed=5, dialect=node.dialect)


def test_with_default_flags_the_output_equals_the_other_nodes_logs(tmp_path, other: Seeded):
    node, seeded = other
    # No --to-block: the end is the finalized block, which these nodes say is their head.
    result = backfill(tmp_path, [node.url], from_block=0)
    end = result.summary["to_block"]
    assert end >= seeded.last_block
    assert_equals_node(result, tmp_path, node, 0, end)
    # Its checks confirm each block hash once, though its audits find no receipts to read.
    blocks = {row[0] for row in node_rows(node, 0, end)}
    assert result.summary["endpoints"][0]["hashes_confirmed"] == len(blocks)


def test_filtered_beside_a_flaky_route_to_it_the_output_equals_its_logs(tmp_path, other: Seeded):
    node, seeded = other
    emitter = next(e for e in EMITTERS if e.topics == 3)
    with FaultProxy(node.url, replace(PROFILES["flaky"], seed=3)) as flaky:
        result = backfill(
            tmp_path,
            [f"direct={node.url}", f"flaky={flaky.url}"],
            from_block=seeded.first_block,
            to_block=seeded.last_block,
            chunk_size=20,
            addresses=[emitter.address],
            topics=[[emitter.topic0]],
        )
    filters = {"addresses": [emitter.address], "topics": [[emitter.topic0]]}
    assert_equals_node(result, tmp_path, node, seeded.first_block, seeded.last_block, **filters)
    assert result.summary["stored_logs"] > 0
