"""Mapper: decoded eth_getLogs JSON -> an Arrow table, column by column.

Per-log Python work is the bottleneck at ~100k logs/s, so each column is pulled out with C-level
map/itemgetter and hex is decoded once per column (one bytes.fromhex over the joined strings).
"""

from __future__ import annotations

from itertools import repeat
from operator import itemgetter

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ErrorKind, RpcError

HASH_BYTES = 32
ADDRESS_BYTES = 20
TOPIC_COLUMNS = ("topic0", "topic1", "topic2", "topic3")


def log_schema(hex_output: bool = False) -> pa.Schema:
    """Output columns, named as cryo names them; byte columns are 0x strings with hex_output."""
    raw = pa.string() if hex_output else pa.binary()
    return pa.schema(
        [
            ("block_number", pa.uint64()),
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


def logs_to_table(logs: list[dict], chain_id: int, hex_output: bool = False) -> pa.Table:
    """Convert decoded logs to a table with log_schema(); a malformed log raises RpcError."""
    try:
        columns = _columns(logs, chain_id, hex_output)
    except (KeyError, TypeError, ValueError, IndexError, pa.ArrowInvalid) as exc:
        raise RpcError(ErrorKind.MALFORMED, f"malformed log in response: {exc!r:.200}") from None
    return pa.Table.from_arrays(columns, schema=log_schema(hex_output))


def _columns(logs: list[dict], chain_id: int, hex_output: bool) -> list[pa.Array]:
    n = len(logs)
    field = _hex_strings if hex_output else _decode_fixed
    topics = list(map(itemgetter("topics"), logs))
    data = list(map(itemgetter("data"), logs))
    return [
        _quantities(map(itemgetter("blockNumber"), logs), pa.uint64()),
        field(list(map(itemgetter("blockHash"), logs)), HASH_BYTES),
        _quantities(map(itemgetter("transactionIndex"), logs), pa.uint32()),
        field(list(map(itemgetter("transactionHash"), logs)), HASH_BYTES),
        _quantities(map(itemgetter("logIndex"), logs), pa.uint32()),
        field(list(map(itemgetter("address"), logs)), ADDRESS_BYTES),
        *(_topic_column(topics, i, field) for i in range(len(TOPIC_COLUMNS))),
        _hex_strings(data, 0) if hex_output else _decode_variable(data),
        pa.repeat(pa.scalar(chain_id, pa.uint64()), n),
    ]


def _quantities(values, arrow_type: pa.DataType) -> pa.Array:
    return pa.array(list(map(int, values, repeat(16))), arrow_type)


def _topic_column(topics: list[list[str]], position: int, field) -> pa.Array:
    present = [len(t) > position for t in topics]
    if all(present):
        return field(list(map(itemgetter(position), topics)), HASH_BYTES)
    filler = "0x" + "00" * HASH_BYTES
    values = [t[position] if has else filler for t, has in zip(topics, present, strict=False)]
    return field(values, HASH_BYTES, pa.array(present, pa.bool_()))


def _hex_strings(values: list[str], size: int, valid: pa.Array | None = None) -> pa.Array:
    array = pa.array(values, pa.string())
    array = pc.utf8_lower(array)  # providers differ in case; one spelling per value
    if size:
        _check_hex_width(array, size)
    return array if valid is None else pc.if_else(valid, array, pa.scalar(None, pa.string()))


def _check_hex_width(array: pa.Array, size: int) -> None:
    if len(array) and not pc.all(pc.equal(pc.utf8_length(array), 2 + 2 * size)).as_py():
        raise ValueError(f"a value is not {size} bytes of 0x hex")


def _decode_fixed(values: list[str], size: int, valid: pa.Array | None = None) -> pa.Array:
    joined = "".join(values)
    if len(joined) != len(values) * (2 + 2 * size):
        raise ValueError(f"a value is not {size} bytes of 0x hex")
    raw = bytes.fromhex(joined.replace("0x", ""))
    validity = None if valid is None else valid.buffers()[1]
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(size), len(values), [validity, pa.py_buffer(raw)]
    )
    return fixed.cast(pa.binary())


def _decode_variable(values: list[str]) -> pa.Array:
    raw = bytes.fromhex("".join(values).replace("0x", ""))
    lengths = pc.divide(pc.subtract(pc.utf8_length(pa.array(values, pa.string())), 2), 2)
    offsets = pa.concat_arrays(
        [pa.array([0], pa.int32()), pc.cumulative_sum(lengths).cast(pa.int32())]
    )
    if offsets[-1].as_py() != len(raw):
        raise ValueError("a data value is not 0x hex of whole bytes")
    return pa.BinaryArray.from_buffers(
        pa.binary(), len(values), [None, offsets.buffers()[1], pa.py_buffer(raw)]
    )
