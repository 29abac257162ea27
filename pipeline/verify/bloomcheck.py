"""An answer's logs held against their blocks' logs blooms: a log its block's bloom excludes
was never in that block."""

from __future__ import annotations

import random

import pyarrow as pa

from pipeline.fetch.convert import TOPIC_COLUMNS
from pipeline.fetch.rpc import BlockHeader
from pipeline.verify.bloom import may_contain

BLOOM_SAMPLE = 64  # logs of an answer whose topics 1-3 are held against their block's bloom


def bloom_excluded(
    table: pa.Table, headers: dict[int, BlockHeader], rng: random.Random
) -> int | None:
    """A block with a log whose address or topics its bloom excludes: every log's address and
    topic0 (few distinct values a block), the other topics of a sample of logs; blocks without
    a header in `headers` are not checked."""
    if not table.num_rows:
        return None
    rows = sorted(rng.sample(range(table.num_rows), min(BLOOM_SAMPLE, table.num_rows)))
    sample = table.take(pa.array(rows))
    pairs = [
        (number, value)
        for part, columns in ((table, ("address", "topic0")), (sample, TOPIC_COLUMNS[1:]))
        for column in columns
        for number, value in _distinct(part, column)
    ]
    bits: dict[bytes, bool] = {}
    for number, value in pairs:
        if number not in headers:
            continue  # a block whose header this check did not read (see Verifier._affordable)
        bloom = headers[number].bloom
        raw = bytes.fromhex(value[2:]) if isinstance(value, str) else value
        if bloom and not bits.setdefault(raw + bloom, may_contain(bloom, raw)):
            return number
    return None


def _distinct(table: pa.Table, column: str) -> list[tuple[int, bytes | str]]:
    """The distinct (block, value) pairs of a column, nulls left out."""
    pairs = table.select(["block_number", column]).group_by(["block_number", column]).aggregate([])
    return [
        (number, value)
        for number, value in zip(
            pairs["block_number"].to_pylist(), pairs[column].to_pylist(), strict=True
        )
        if value is not None
    ]
