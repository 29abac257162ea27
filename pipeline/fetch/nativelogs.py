"""The C parser behind the fast path: an eth_getLogs body straight to a log_schema() table in one
pass over its bytes, with the numpy parser (fastlogs.py) as the fallback.

The C extension (_fastlogs.c, built at install time when a compiler is there: setup.py) reads the
inside of the `result` array and gives the column buffers, which become Arrow arrays without a
Python object per log; hex_output (lowercase 0x strings) is done in C too. The envelope around the
array is checked here exactly as fastlogs checks it. What the C parser refuses (anything but
compact JSON of flat logs with well-formed hex, see _fastlogs.c) goes to the numpy parser, and
what that refuses to the careful path, as before.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.fetch import fastlogs
from pipeline.fetch.convert import ADDRESS_BYTES, HASH_BYTES, TIMESTAMP_TYPE, log_schema

try:
    from pipeline.fetch import _fastlogs
except ImportError:  # not built: no compiler at install time
    _fastlogs = None

NATIVE = _fastlogs is not None  # whether the C parser is built and in use


def body_to_table(body: bytes, chain_id: int, hex_output: bool) -> pa.Table | None:
    """fastlogs.body_to_table, by the C parser when it is built and takes the body; None when
    neither parser takes it (the caller takes the careful path)."""
    table = native_table(body, chain_id, hex_output)
    return table if table is not None else fastlogs.body_to_table(body, chain_id, hex_output)


def body_to_table_in_pieces(
    body: bytes | memoryview, chain_id: int, hex_output: bool, piece_bytes: int
) -> pa.Table | None:
    """fastlogs.body_to_table_in_pieces, by the C parser when it takes the body: it reads the
    whole body at once (in place, a memoryview too), as its columns need less memory than the
    body itself. The numpy parser's table may share its body's memory: it gets a copy."""
    table = native_table(body, chain_id, hex_output)
    if table is not None:
        return table
    return fastlogs.body_to_table_in_pieces(bytes(body), chain_id, hex_output, piece_bytes)


def native_table(body: bytes | memoryview, chain_id: int, hex_output: bool) -> pa.Table | None:
    """The C parser's table; None when it is not built or refuses the body (bytes, or a
    read-only memoryview: the parse runs without the GIL, so nobody may change the body)."""
    if _fastlogs is None or not (
        type(body) is bytes or (type(body) is memoryview and body.readonly)
    ):
        return None
    try:
        return _native_table(body, chain_id, hex_output)
    except Exception:  # a refused envelope, or any surprise: the fallbacks decide
        return None


def _native_table(body: bytes | memoryview, chain_id: int, hex_output: bool) -> pa.Table | None:
    start, end = fastlogs._result_span(body)  # one definition of the envelope's contract
    # The C code sees only the array: the rest, like all of a body the numpy parser takes, must be
    # ASCII without escapes.
    outside = bytes(body[:start]) + bytes(body[end:])
    if not outside.isascii() or b"\\" in outside:
        return None
    if end - start < 8 and not bytes(body[start:end]).strip(b" \t\n\r"):
        return log_schema(hex_output).empty_table()
    parts = _fastlogs.parse(body, start, end, hex_output)
    return None if parts is None else _table(parts, chain_id, hex_output)


def _table(parts: tuple, chain_id: int, hex_output: bool) -> pa.Table:
    """The table over the C parser's column buffers (no copy)."""
    (count, block_number, stamps, tx_index, log_index, block_hash, tx_hash, address, topics,
     *data) = parts  # fmt: skip
    raw = pa.string() if hex_output else pa.binary()
    hash_width, address_width = (
        (2 + 2 * HASH_BYTES, 2 + 2 * ADDRESS_BYTES) if hex_output else (HASH_BYTES, ADDRESS_BYTES)
    )
    steps = np.arange(count + 1, dtype=np.int32)
    hash_offsets = pa.py_buffer(steps * hash_width)

    def fixed(values: object, offsets: pa.Buffer) -> pa.Array:
        return pa.Array.from_buffers(raw, count, [None, offsets, pa.py_buffer(values)])

    def numbers(values: object, arrow_type: pa.DataType) -> pa.Array:
        return pa.Array.from_buffers(arrow_type, count, [None, pa.py_buffer(values)])

    topic_columns = [
        pa.Array.from_buffers(
            raw,
            count,
            [validity and pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(values)],
            null_count=nulls,
        )
        for validity, offsets, values, nulls in topics
    ]
    data_offsets, data_values = data
    stamp_validity, seconds, stamp_nulls = stamps
    timestamps = pa.Array.from_buffers(
        TIMESTAMP_TYPE,
        count,
        [stamp_validity and pa.py_buffer(stamp_validity), pa.py_buffer(seconds)],
        null_count=stamp_nulls,
    )
    columns = [
        numbers(block_number, pa.uint64()),
        timestamps,
        fixed(block_hash, hash_offsets),
        numbers(tx_index, pa.uint32()),
        fixed(tx_hash, hash_offsets),
        numbers(log_index, pa.uint32()),
        fixed(address, pa.py_buffer(steps * address_width)),
        *topic_columns,
        pa.Array.from_buffers(
            raw, count, [None, pa.py_buffer(data_offsets), pa.py_buffer(data_values)]
        ),
        pa.repeat(pa.scalar(chain_id, pa.uint64()), count),
    ]
    return pa.Table.from_arrays(columns, schema=log_schema(hex_output))
