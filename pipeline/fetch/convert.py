"""Mapper: decoded eth_getLogs JSON -> an Arrow table, column by column.

Per-log Python work is the bottleneck at ~100k logs/s, so each column is pulled out with C-level
map/itemgetter and hex is decoded once per column (one bytes.fromhex over the joined strings).
"""

from __future__ import annotations

from itertools import repeat
from operator import itemgetter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ErrorKind, RpcError

HASH_BYTES = 32
ADDRESS_BYTES = 20
TOPIC_COLUMNS = ("topic0", "topic1", "topic2", "topic3")
TIMESTAMP_TYPE = pa.timestamp("s", tz="UTC")
MAX_TIMESTAMP = 2**63 - 1  # what the column's int64 holds; a header timestamp is a uint64
# What reading a malformed log raises in _columns (a number where a string belongs, a value past
# its column's type...).
_MALFORMED = (
    KeyError, TypeError, ValueError, IndexError, OverflowError, AttributeError, pa.ArrowException
)  # fmt: skip


def log_schema(hex_output: bool = False) -> pa.Schema:
    """Output columns, named as cryo names them; byte columns are 0x strings with hex_output.
    block_timestamp is null only in the parsers' tables, where a log had no (or a zero)
    blockTimestamp: the worker fills it from block headers before anything is stored."""
    raw = pa.string() if hex_output else pa.binary()
    return pa.schema(
        [
            ("block_number", pa.uint64()),
            ("block_timestamp", TIMESTAMP_TYPE),
            ("block_hash", raw),
            ("transaction_index", pa.uint32()),
            ("transaction_hash", raw),
            ("log_index", pa.uint32()),
            ("address", raw),
            *((name, raw) for name in TOPIC_COLUMNS),
            ("data", raw),
            ("chain_id", pa.uint64()),
        ]
    )


def log_keys(table: pa.Table) -> np.ndarray:
    """One uint64 per log that orders logs as the chain does: block number, then log index
    (both columns without nulls)."""
    blocks = table["block_number"].to_numpy().astype(np.uint64)
    return (blocks << np.uint64(32)) | table["log_index"].to_numpy().astype(np.uint64)


def in_log_order(table: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """`table` sorted by block and log index, and its log_keys in that order. Nodes answer in
    that order, so this is usually one comparison per log, and no copy."""
    keys = log_keys(table)
    if bool(np.all(keys[1:] >= keys[:-1])):
        return table, keys
    order = np.argsort(keys, kind="stable")
    return table.take(pa.array(order)), keys[order]


def logs_to_table(logs: list[dict], chain_id: int, hex_output: bool = False) -> pa.Table:
    """Convert decoded logs to a table with log_schema(); a malformed log raises RpcError."""
    try:
        columns = _columns(logs, chain_id, hex_output)
    except _MALFORMED as exc:
        raise RpcError(ErrorKind.MALFORMED, f"malformed log in response: {exc!r:.200}") from None
    return pa.Table.from_arrays(columns, schema=log_schema(hex_output))


def _columns(logs: list[dict], chain_id: int, hex_output: bool) -> list[pa.Array]:
    n = len(logs)
    field = _hex_strings if hex_output else _decode_fixed
    topics = list(map(itemgetter("topics"), logs))
    if not all(isinstance(t, list) for t in topics):
        raise ValueError("a log's topics is not an array")
    data = list(map(itemgetter("data"), logs))
    return [
        _quantities(list(map(itemgetter("blockNumber"), logs)), pa.uint64()),
        _timestamps([log.get("blockTimestamp") for log in logs]),
        field(list(map(itemgetter("blockHash"), logs)), HASH_BYTES),
        _quantities(list(map(itemgetter("transactionIndex"), logs)), pa.uint32()),
        field(list(map(itemgetter("transactionHash"), logs)), HASH_BYTES),
        _quantities(list(map(itemgetter("logIndex"), logs)), pa.uint32()),
        field(list(map(itemgetter("address"), logs)), ADDRESS_BYTES),
        *(_topic_column(topics, i, field) for i in range(len(TOPIC_COLUMNS))),
        _hex_strings(data, 0) if hex_output else _decode_variable(data),
        pa.repeat(pa.scalar(chain_id, pa.uint64()), n),
    ]


def _checked(values: list, pattern: str, what: str) -> pa.Array:
    """`values` as a string array, if every one is a string that matches `pattern`: int() and
    bytes.fromhex() alone would take "12", " 0x1", "0x_1" or a hash one byte short."""
    array = pa.array(values, pa.string())  # TypeError for anything but a string (or None)
    matches = pc.match_substring_regex(array, pattern)
    if array.null_count or not pc.all(matches, min_count=0).as_py():
        raise ValueError(f"a value is not {what}")
    return array


def _hex_pattern(size: int) -> str:
    """0x and `size` bytes of hex digits; size 0: any whole number of bytes."""
    return rf"^0x[0-9a-fA-F]{{{2 * size}}}$" if size else r"^0x(?:[0-9a-fA-F]{2})*$"


def _quantities(values: list, arrow_type: pa.DataType) -> pa.Array:
    _checked(values, r"^0x[0-9a-fA-F]+$", "a 0x quantity")
    # A quantity past the column's type raises OverflowError or ArrowInvalid here.
    return pa.array(list(map(int, values, repeat(16))), arrow_type)


def _timestamps(values: list) -> pa.Array:
    """The optional blockTimestamp: null where a log has none, null or zero (never trusted); any
    other value must be a 0x quantity that fits the column."""
    present = [v is not None for v in values]
    given = [v for v in values if v is not None]
    _checked(given, r"^0x[0-9a-fA-F]+$", "a 0x quantity")
    numbers = [int(v, 16) for v in given]
    if any(n > MAX_TIMESTAMP for n in numbers):
        raise ValueError("a blockTimestamp is past any time a column holds")
    stamps = iter(numbers)
    seconds = [(next(stamps) or None) if has else None for has in present]
    return pa.array(seconds, pa.int64()).cast(TIMESTAMP_TYPE)


def _topic_column(topics: list[list[str]], position: int, field) -> pa.Array:
    present = [len(t) > position for t in topics]
    if all(present):
        return field(list(map(itemgetter(position), topics)), HASH_BYTES)
    filler = "0x" + "00" * HASH_BYTES
    values = [t[position] if has else filler for t, has in zip(topics, present, strict=False)]
    return field(values, HASH_BYTES, pa.array(present, pa.bool_()))


def _hex_strings(values: list[str], size: int, valid: pa.Array | None = None) -> pa.Array:
    array = _checked(values, _hex_pattern(size), f"0x hex of {size or 'whole'} bytes")
    array = pc.utf8_lower(array)  # providers differ in case; one spelling per value
    return array if valid is None else pc.if_else(valid, array, pa.scalar(None, pa.string()))


def _decode_fixed(values: list[str], size: int, valid: pa.Array | None = None) -> pa.Array:
    _checked(values, _hex_pattern(size), f"{size} bytes of 0x hex")
    raw = bytes.fromhex("".join(values).replace("0x", ""))
    validity = None if valid is None else valid.buffers()[1]
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(size), len(values), [validity, pa.py_buffer(raw)]
    )
    return fixed.cast(pa.binary())


def _decode_variable(values: list[str]) -> pa.Array:
    strings = _checked(values, _hex_pattern(0), "0x hex of whole bytes")
    raw = bytes.fromhex("".join(values).replace("0x", ""))
    lengths = pc.divide(pc.subtract(pc.utf8_length(strings), 2), 2)
    offsets = pa.concat_arrays(
        [pa.array([0], pa.int32()), pc.cumulative_sum(lengths).cast(pa.int32())]
    )
    return pa.BinaryArray.from_buffers(
        pa.binary(), len(values), [None, offsets.buffers()[1], pa.py_buffer(raw)]
    )
