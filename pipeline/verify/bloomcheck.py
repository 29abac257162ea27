"""An answer's logs held against their blocks' logs blooms: a log its block's bloom excludes
was never in that block. Vectorised: a bloom's bits are looked up for every row at once, and
each distinct address or topic is hashed once."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.fetch.convert import TOPIC_COLUMNS
from pipeline.fetch.rpc import BlockHeader
from pipeline.verify.bloom import BLOOM_BYTES, bloom_positions_of

BLOOM_SAMPLE = 64  # logs of an answer whose topics 1-3 are held against their block's bloom


def bloom_excluded(
    table: pa.Table, headers: dict[int, BlockHeader], rng: random.Random
) -> int | None:
    """A block with a log whose address or topics its bloom excludes: every log's address and
    topic0, the other topics of a sample of logs; blocks without a header in `headers` (or
    whose header has no bloom) are not checked."""
    blooms = {n: h.bloom for n, h in headers.items() if len(h.bloom) == BLOOM_BYTES}
    if not table.num_rows or not blooms:
        return None
    numbers = np.array(sorted(blooms), dtype=np.uint64)
    matrix = np.frombuffer(b"".join(blooms[n] for n in numbers.tolist()), np.uint8)
    matrix = matrix.reshape(len(numbers), BLOOM_BYTES)
    sample = table.select(["block_number", *TOPIC_COLUMNS[1:]])
    if table.num_rows > BLOOM_SAMPLE:  # (a take of every column cost ~1 ms an answer)
        rows = sorted(rng.sample(range(table.num_rows), BLOOM_SAMPLE))
        sample = sample.take(pa.array(rows, pa.int64()))
    # One pass over every checked value, in the order the checks are reported: per answer, a
    # pass per column cost its fixed overhead five times.
    parts = [(table, c) for c in ("address", "topic0")] + [(sample, c) for c in TOPIC_COLUMNS[1:]]
    blocks = [chunk for part, _ in parts for chunk in part["block_number"].chunks]
    values = [chunk for part, column in parts for chunk in part[column].chunks]
    return _first_excluded(
        pa.chunked_array(blocks, pa.uint64()),
        pa.chunked_array(values, table.schema.field("topic0").type),
        numbers,
        matrix,
    )


def _first_excluded(
    blocks: pa.ChunkedArray, values: pa.ChunkedArray, numbers: np.ndarray, matrix: np.ndarray
) -> int | None:
    """The first of `blocks` whose bloom (row of `matrix`, by `numbers`) lacks a bit of the
    value beside it; nulls, and blocks not in `numbers`, pass."""
    encoded = pc.dictionary_encode(values.combine_chunks())
    present = ~encoded.indices.is_null().to_numpy(zero_copy_only=False)
    if not present.any():
        return None
    where = bloom_positions_of([_raw(v) for v in encoded.dictionary.to_pylist()])
    byte_at, mask = where[:, :, 0], where[:, :, 1].astype(np.uint8)
    # Which blooms hold which values (blocks x distinct values: few of each in one answer),
    # then one lookup per log.
    holds = ((matrix[:, byte_at] & mask) != 0).all(axis=2)
    block = blocks.combine_chunks().to_numpy(zero_copy_only=False).astype(np.uint64)[present]
    value = encoded.indices.to_numpy(zero_copy_only=False)[present].astype(np.int64)
    row = np.minimum(np.searchsorted(numbers, block), len(numbers) - 1)
    excluded = (numbers[row] == block) & ~holds[row, value]
    return int(block[np.argmax(excluded)]) if excluded.any() else None


def _raw(value: bytes | str) -> bytes:
    """An address or topic as bytes, from either output form (raw, or 0x hex)."""
    return bytes.fromhex(value[2:]) if isinstance(value, str) else value
