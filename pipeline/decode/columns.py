"""Raw logs (log_schema(), binary or --hex) -> one decoded table per event, column by column.

Matching, inside decode(): a log is this event's when its topic0 is the event's selector (any
log in the table may be given; the rest are ignored) and it has exactly the event's topics
(topic0..topic{k-1} present, the others null; k = 1 + indexed parameters). An anonymous event
has no selector: every log with exactly its number of topics is a candidate (see signature.py).

Logs with the selector that do not fit (another number of topics, data too short, a value whose
padding is not canonical, bad offsets or lengths in dynamic data) are left out of the table and
counted in `failures`, the first few as `examples`; nothing raises for a log. eth_abi in strict
mode is the reference: what it refuses fails, what it takes is decoded to the same values.

Static types (in topics or data) are decoded column-wise (static.py, ints.py); data that holds a
dynamic type goes through eth_abi log by log (dynamic.py). Logs are taken BATCH_ROWS at a time to
bound the memory of the intermediate arrays.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.decode.abitypes import WORD
from pipeline.decode.binary import fixed_rows, hex_rows, to_hex, unhex, value_bounds
from pipeline.decode.dynamic import decode_rows
from pipeline.decode.schema import output_schema, param_columns
from pipeline.decode.signature import EventSpec
from pipeline.decode.static import decode_static, topic_column

BATCH_ROWS = 65536
MAX_EXAMPLES = 5
TOPICS = 4
_BYTE_COLUMNS = ("transaction_hash", "address")


@dataclass
class Decoded:
    """One event's table, how many of its logs failed to decode, the first few of those
    ({block_number, log_index, transaction_hash, reason}), and how many decoded rows had a
    string with invalid UTF-8 (kept, with U+FFFD in place of the bad bytes)."""

    table: pa.Table
    failures: int
    examples: list[dict] = field(default_factory=list)
    invalid_utf8: int = 0


def decode(table: pa.Table, spec: EventSpec, hex_output: bool) -> Decoded:
    """Decode the logs of `table` that are `spec`'s; every log with its selector but another
    number of topics is a failure (decode_all knows when another spec takes it)."""
    return _decode(_Raw(table), spec, hex_output, frozenset(), blame_topics=True)


def decode_all(
    table: pa.Table, specs: Iterable[EventSpec], hex_output: bool
) -> dict[EventSpec, Decoded]:
    """decode() for each spec, reading the raw table once. Specs that share a selector (ERC-20
    and ERC-721 Transfer) split its logs by topic count; a log whose topic count none of them
    has is a failure of the first of them (by topic count, then signature)."""
    raw = _Raw(table)
    unique = list(dict.fromkeys(specs))
    groups: dict[str, list[EventSpec]] = {}
    for spec in unique:
        if not spec.anonymous:
            groups.setdefault(spec.topic0, []).append(spec)
    results = {}
    for spec in unique:
        group = [spec] if spec.anonymous else sorted(groups[spec.topic0], key=_group_order)
        others = frozenset(s.topic_count for s in group) - {spec.topic_count}
        results[spec] = _decode(raw, spec, hex_output, others, blame_topics=spec == group[0])
    return results


def _group_order(spec: EventSpec) -> tuple:
    return (spec.topic_count, spec.signature, spec.layout)


class _Raw:
    """The raw table with what every spec needs computed once: which topics each log has."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.hex_input = pa.types.is_string(table.schema.field("topic0").type)
        self.topics = [_combined(table, f"topic{i}") for i in range(TOPICS)]
        self.data = _combined(table, "data")
        self.present = np.stack(
            [t.is_valid().to_numpy(zero_copy_only=False) for t in self.topics], axis=1
        ).reshape(table.num_rows, TOPICS)
        self.count = self.present.sum(axis=1)
        self._topic0 = None

    def has_topic0(self, topic0: str) -> np.ndarray:
        """Which logs have this 0x selector as topic0."""
        if self.hex_input:
            if self._topic0 is None:
                self._topic0 = pc.utf8_lower(self.topics[0])
            match = pc.equal(self._topic0, topic0.lower())
        else:
            match = pc.equal(self.topics[0], pa.scalar(bytes.fromhex(topic0[2:]), pa.binary()))
        return match.fill_null(False).to_numpy(zero_copy_only=False)

    def lengths(self, array: pa.Array, rows: np.ndarray) -> np.ndarray:
        """The length in bytes of the values at `rows`."""
        lengths = value_bounds(array)[1][rows]
        return (lengths - 2) // 2 if self.hex_input else lengths

    def block(self, array: pa.Array, rows: np.ndarray, width: int) -> np.ndarray:
        """The first `width` bytes of the values at `rows` (all that long), as (m, width)."""
        return hex_rows(array, rows, width) if self.hex_input else fixed_rows(array, rows, width)

    def payloads(self, array: pa.Array, rows: np.ndarray) -> pa.Array:
        """The values at `rows` as a binary array."""
        taken = array.take(pa.array(rows))
        return unhex(taken) if self.hex_input else taken

    def describe(self, row: int, reason: str) -> dict:
        """A failure example: where the log is, and why it did not decode."""
        tx_hash = self.table.column("transaction_hash")[row].as_py()
        return {
            "block_number": self.table.column("block_number")[row].as_py(),
            "log_index": self.table.column("log_index")[row].as_py(),
            "transaction_hash": tx_hash if isinstance(tx_hash, str) else "0x" + tx_hash.hex(),
            "reason": reason,
        }


@dataclass
class _Batch:
    """The decoded rows of one batch: which of its logs decoded, their columns in
    output order, failure reasons by position in the batch, invalid UTF-8 rows."""

    ok: np.ndarray
    columns: list[pa.Array]
    reasons: dict[int, str]
    invalid_utf8: int


def _decode(
    raw: _Raw, spec: EventSpec, hex_output: bool, others: frozenset[int], blame_topics: bool
) -> Decoded:
    wanted = spec.topic_count
    candidates = (raw.count == wanted) if spec.anonymous else raw.has_topic0(spec.topic0)
    fits = candidates & (raw.count == wanted) & raw.present[:, :wanted].all(axis=1)
    misfits = candidates & ~fits & ~np.isin(raw.count, list(others)) & blame_topics
    failures = int(misfits.sum())
    examples = [
        (int(row), f"{raw.count[row]} topics, expected {wanted}")
        for row in np.flatnonzero(misfits)[:MAX_EXAMPLES]
    ]
    rows = np.flatnonzero(fits)
    batches, accepted, invalid = [], [], 0
    for start in range(0, len(rows), BATCH_ROWS):
        part = rows[start : start + BATCH_ROWS]
        batch = _decode_batch(raw, spec, part, hex_output)
        failures += int(len(part) - batch.ok.sum())
        examples += [(int(part[i]), why) for i, why in batch.reasons.items()]
        accepted.append(part[batch.ok])
        batches.append(batch.columns)
        invalid += batch.invalid_utf8
    examples = [raw.describe(row, why) for row, why in sorted(examples)[:MAX_EXAMPLES]]
    table = _assemble(raw, spec, hex_output, accepted, batches)
    return Decoded(table, failures, examples, invalid)


def _decode_batch(raw: _Raw, spec: EventSpec, rows: np.ndarray, hex_output: bool) -> _Batch:
    checks: list[tuple[np.ndarray, str]] = []  # (rows that pass, why the others fail)
    by_param: dict[str, tuple] = {}
    position = 0 if spec.anonymous else 1
    for param in spec.indexed_params:
        topics = raw.block(raw.topics[position], rows, WORD)
        column = topic_column(param.type, topics, hex_output)
        why = f'topic{position} "{param.name}" is not a canonical {param.abi_type}'
        checks.append((column.ok, why))
        by_param[param.name] = (column.values, column.f64)
        position += 1
    data_params = spec.data_params
    if any(p.type.dynamic for p in data_params):
        payloads = raw.payloads(raw.data, rows)
        return _dynamic_batch(spec, checks, by_param, payloads, hex_output)
    width = WORD * sum(p.type.head_words for p in data_params)
    long_enough = raw.lengths(raw.data, rows) >= width
    checks.append((long_enough, f"data is shorter than {width} bytes"))
    if long_enough.all():
        block = raw.block(raw.data, rows, width)
    else:
        block = np.zeros((len(rows), width), np.uint8)
        block[long_enough] = raw.block(raw.data, rows[long_enough], width)
    start = 0
    for param in data_params:
        end = start + WORD * param.type.head_words
        column = decode_static(param.type, block[:, start:end], hex_output)
        checks.append((column.ok, f'"{param.name}" is not a canonical {param.abi_type}'))
        by_param[param.name] = (column.values, column.f64)
        start = end
    ok = np.logical_and.reduce([passed for passed, _ in checks] + [np.ones(len(rows), bool)])
    columns = {n: tuple(_filtered(a, ok) for a in v) for n, v in by_param.items()}
    return _Batch(ok, _in_order(spec, columns), _reasons(checks, ok), 0)


def _dynamic_batch(
    spec: EventSpec, checks: list, by_param: dict, data: pa.Array, hex_output: bool
) -> _Batch:
    """Topics are decoded; the data of the logs whose topics are fine goes through eth_abi."""
    count = len(data)
    topics_ok = np.logical_and.reduce([passed for passed, _ in checks] + [np.ones(count, bool)])
    reasons = _reasons(checks, topics_ok)
    payloads = data.filter(pa.array(topics_ok)).to_pylist()
    params = spec.data_params
    decoded = decode_rows([p.type for p in params], payloads, hex_output, MAX_EXAMPLES)
    where = np.flatnonzero(topics_ok)
    reasons.update({int(where[i]): why for i, why in decoded.reasons.items()})
    ok = np.zeros(count, bool)
    ok[where[decoded.ok]] = True
    columns = {n: tuple(_filtered(a, ok) for a in v) for n, v in by_param.items()}
    for param, values, f64 in zip(params, decoded.columns, decoded.f64, strict=True):
        columns[param.name] = (values, f64)
    invalid = int(decoded.invalid_utf8[decoded.ok].sum())
    return _Batch(ok, _in_order(spec, columns), reasons, invalid)


def _reasons(checks: list[tuple[np.ndarray, str]], ok: np.ndarray) -> dict[int, str]:
    """Why each of the first few failing rows failed: the first check it does not pass."""
    reasons = {}
    for row in np.flatnonzero(~ok)[:MAX_EXAMPLES]:
        reasons[int(row)] = next(why for passed, why in checks if not passed[row])
    return reasons


def _in_order(spec: EventSpec, by_param: dict[str, tuple]) -> list[pa.Array]:
    columns = []
    for column in param_columns(spec):
        values, f64 = by_param[column.param.name]
        columns.append(values)
        if column.f64_name:
            columns.append(f64)
    return columns


def _filtered(array: pa.Array | None, ok: np.ndarray) -> pa.Array | None:
    if array is None or ok.all():
        return array
    return array.filter(pa.array(ok))


def _assemble(
    raw: _Raw, spec: EventSpec, hex_output: bool, accepted: list, batches: list
) -> pa.Table:
    """The metadata columns of the accepted logs, then the parameter columns."""
    has_time = "block_timestamp" in raw.table.column_names
    time_type = raw.table.schema.field("block_timestamp").type if has_time else None
    schema = output_schema(spec, hex_output, time_type)
    rows = np.concatenate(accepted) if accepted else np.empty(0, np.int64)
    if len(rows) == 0:
        return schema.empty_table()
    metadata = raw.table.select(schema.names[: 6 + has_time])
    if len(rows) < raw.table.num_rows:  # else every log decoded, in order
        metadata = metadata.take(pa.array(rows))
    columns = [
        _as_output(column.combine_chunks(), hex_output) if name in _BYTE_COLUMNS else column
        for name, column in zip(metadata.column_names, metadata.columns, strict=True)
    ]
    for i in range(len(batches[0])):
        columns.append(pa.concat_arrays([batch[i] for batch in batches]))
    return pa.Table.from_arrays(columns, schema=schema)


def _as_output(array: pa.Array, hex_output: bool) -> pa.Array:
    """A metadata column in the output's spelling of bytes (the raw table may differ)."""
    if pa.types.is_binary(array.type) and hex_output:
        return to_hex(array)
    if pa.types.is_string(array.type) and not hex_output:
        return unhex(array)
    return array


def _combined(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    return column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
