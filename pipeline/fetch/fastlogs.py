"""Fast path: an eth_getLogs response body straight to a log_schema() table, no per-log objects.

A compact `result` array of flat log objects is read with numpy, whole-body array operations
only; anything else is refused (None) and the caller takes the careful path (orjson).

How logs and keys are found without a Python object per log:
1. Strings. Without backslash, whitespace or control bytes (checked first) every '"' opens or
   closes a string, so np.flatnonzero(body == '"') finds all strings at once: even quotes open,
   odd ones close. Each string is a token.
2. Gaps. What lies between one string's closing quote and the next one's opening quote can only
   be a handful of byte sequences in compact JSON: ':' after a key, ',' between values, ':['
   opening a topics array, '],' closing it, '},{' between two logs, or a literal value such as
   ':false,'. Each gap is looked up in a small hash table (_PatternTable) that gives it a code of a
   few bits (see _gap_code): whether a key comes before it, what that key holds, whether it starts
   a new log, how it changes the array depth. An unknown gap refuses the body.
3. Grammar. Cumulative sums over the codes give every token its array depth and its log number;
   keys are the tokens at depth 0 followed by ':'. Whole-array checks prove that the sequence of
   gaps is exactly the grammar of an array of flat objects, so what is taken is what orjson reads.
4. Columns. Keys are named through a second hash table of the known field names; each log must
   have each field once (`removed` and `blockTimestamp` may be missing, and a log may have
   `blockTimestamp` only once: orjson would keep the last of two). Values are then sliced out of
   the body by their quote positions and decoded as columns (hex quantities, fixed-size hashes,
   data).
"""

from __future__ import annotations

import binascii
import re
from itertools import pairwise

import numpy as np
import orjson
import pyarrow as pa

from pipeline.fetch.convert import (
    ADDRESS_BYTES,
    HASH_BYTES,
    MAX_TIMESTAMP,
    TIMESTAMP_TYPE,
    TOPIC_COLUMNS,
    log_schema,
)

_RESULT_OPENING = re.compile(rb'"result"[ \t\n\r]*:[ \t\n\r]*\[')
_BATCH_OPENING = re.compile(rb"[ \t\n\r]*\[")  # a batch of one answer
_WINDOW = 1 << 16  # bytes of a memoryview body searched backwards at a time (_rfind)

# The fields a log must have, numbered in this order (`removed` and `blockTimestamp` may be
# missing).
_LOG_KEYS = (b"blockNumber", b"blockHash", b"transactionIndex", b"transactionHash", b"logIndex",
             b"address", b"topics", b"data", b"removed", b"blockTimestamp")  # fmt: skip
(_BLOCK_NUMBER, _BLOCK_HASH, _TX_INDEX, _TX_HASH, _LOG_INDEX, _ADDRESS, _TOPICS, _DATA, _REMOVED,
 _TIMESTAMP) = range(10)  # fmt: skip
# What a key holds: a string, an array of strings, or one of the literals [], false/null, true.
_HOLDS_STRING, _HOLDS_ARRAY, _HOLDS_EMPTY_ARRAY, _HOLDS_FALSE_OR_NULL, _HOLDS_TRUE = range(5)


def _gap_code(delta: int, after_key: int, new_log: int, holds: int = 7) -> int:
    # A gap's code is its grammar: what the key before it holds (bits 0-2, 7: no key), a key
    # comes before it (bit 3), it starts a log (bit 4), its change of array depth + 1 (bits 5-6).
    return holds | after_key << 3 | new_log << 4 | (delta + 1) << 5


# The gaps between two strings, and (closing) the one after the last string of the array.
_INNER_GAPS = {
    b":": _gap_code(0, 1, 0, _HOLDS_STRING),
    b":[": _gap_code(1, 1, 0, _HOLDS_ARRAY),
    b",": _gap_code(0, 0, 0),
    b"],": _gap_code(-1, 0, 0),
    b"},{": _gap_code(0, 0, 1),
    b"]},{": _gap_code(-1, 0, 1),
}
_CLOSING_GAPS = {b"}": _gap_code(0, 0, 0), b"]}": _gap_code(-1, 0, 0)}  # before the array's ']'
for _literal, _holds in (
    (b"[]", _HOLDS_EMPTY_ARRAY),
    (b"false", _HOLDS_FALSE_OR_NULL),
    (b"null", _HOLDS_FALSE_OR_NULL),
    (b"true", _HOLDS_TRUE),
):
    _INNER_GAPS[b":" + _literal + b","] = _gap_code(0, 1, 0, _holds)
    _INNER_GAPS[b":" + _literal + b"},{"] = _gap_code(0, 1, 1, _holds)
    _CLOSING_GAPS[b":" + _literal + b"}"] = _gap_code(0, 1, 0, _holds)
_COLON_GAP, _COMMA_GAP = _INNER_GAPS[b":"], _INNER_GAPS[b","]
_ONE_BYTE_GAPS = np.full(256, -1, np.int8)  # most gaps: a look-up by their one byte
_ONE_BYTE_GAPS[ord(":")], _ONE_BYTE_GAPS[ord(",")] = _COLON_GAP, _COMMA_GAP
_0X_PAIR = int.from_bytes(b"0x", "little")  # "0x" read as one uint16
_DIGIT_PLACES = np.arange(16) >= 16 - np.arange(17)[:, None]  # [k]: the last k of 16 places
_LOW_BYTES_MASKS = np.array([(1 << 8 * k) - 1 for k in range(8)] + [2**64 - 1], np.uint64)


class _Refused(Exception):
    """The body is not one the fast path takes."""


def _require(condition: object) -> None:
    if not condition:
        raise _Refused


def _fingerprints(
    chars: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, ...]:
    # Strings of up to 16 bytes are told apart exactly by their first and last 8 bytes and length.
    # 8 bytes from each position; reading past the end raises.
    u64 = np.ndarray((len(chars) - 7,), "<u8", chars, 0, (1,))
    first = u64[starts] & np.take(_LOW_BYTES_MASKS, np.minimum(lengths, 8))
    last = np.zeros_like(first)
    long = np.flatnonzero(lengths > 8)
    last[long] = u64[starts[long] + np.minimum(lengths[long], 17) - 8]
    slot = ((first ^ last) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(54)  # of 1024
    return first, last, slot.astype(np.intp)


class _PatternTable:
    """A few byte strings of 1-16 bytes and their codes, in a hash table without collisions."""

    def __init__(self, patterns: dict[bytes, int]) -> None:
        table = np.frombuffer(b"".join(p.ljust(16, b"\0") for p in patterns) + bytes(8), np.uint8)
        lengths = np.array([len(p) for p in patterns])
        first, last, slot = _fingerprints(table, np.arange(len(patterns)) * 16, lengths)
        assert len(set(slot.tolist())) == len(patterns)  # so one look-up per string settles it
        self.first, self.last = np.zeros(1024, np.uint64), np.zeros(1024, np.uint64)
        self.length, self.code = np.full(1024, -1), np.full(1024, -1, np.int8)
        self.first[slot], self.last[slot] = first, last
        self.length[slot], self.code[slot] = lengths, list(patterns.values())

    def codes(self, chars: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The code of each string chars[start:start+length], -1 if not a pattern."""
        first, last, slot = _fingerprints(chars, starts, lengths)
        same = (np.take(self.first, slot) == first) & (np.take(self.last, slot) == last)
        return np.where(same & (np.take(self.length, slot) == lengths), self.code[slot], -1)


_GAP_PATTERNS = _PatternTable({gap: code for gap, code in _INNER_GAPS.items() if len(gap) > 1})
_KEY_PATTERNS = _PatternTable({name: field for field, name in enumerate(_LOG_KEYS)})


def body_to_table(body: bytes, chain_id: int, hex_output: bool) -> pa.Table | None:
    """The logs of a successful eth_getLogs JSON-RPC response as a log_schema() table; None
    when the body is anything else (error, odd shape, non-hex...) so the caller takes the
    careful path (orjson + logs_to_table), which classifies what is wrong."""
    try:
        return _body_to_table(body, chain_id, hex_output)
    except Exception:  # _Refused, or any surprise: the careful path will say what it is
        return None


def body_to_table_in_pieces(
    body: bytes, chain_id: int, hex_output: bool, piece_bytes: int
) -> pa.Table | None:
    """body_to_table, about `piece_bytes` of the array at a time: parsing peaks near 3x what it
    reads, so a big answer costs its size plus a few pieces, not 3x its size."""
    if len(body) <= piece_bytes:
        return body_to_table(body, chain_id, hex_output)
    try:
        start, end = _result_span(body)
    except Exception:  # as in body_to_table: the careful path says what is wrong
        return None
    tables = []
    while start < end:
        # Cut between two logs. A cut inside a string leaves two pieces that are not JSON, and
        # then the careful path reads the whole body.
        cut = body.find(b"},{", start + piece_bytes, end) if end - start > piece_bytes else -1
        stop = end if cut < 0 else cut + 1
        table = body_to_table(_PIECE_HEAD + body[start:stop] + b"]}", chain_id, hex_output)
        if table is None:
            return None
        tables.append(table)
        start = stop + 1
    return pa.concat_tables(tables)


_PIECE_HEAD = b'{"jsonrpc":"2.0","id":0,"result":['


def _body_to_table(body: bytes, chain_id: int, hex_output: bool) -> pa.Table:
    # Non-ASCII or an escape could spell what the byte checks below do not see.
    _require(len(body) < 2**31 and body.isascii() and b"\\" not in body)
    start, end = _result_span(body)
    if end - start < 8 and not body[start:end].strip(b" \t\n\r"):
        return log_schema(hex_output).empty_table()
    chars = np.frombuffer(body, np.uint8)
    values, topics, stamps = _locate_fields(chars, start, end)
    numbers = _hex_quantities(chars, [values[_BLOCK_NUMBER], values[_TX_INDEX], values[_LOG_INDEX]])
    timestamps = _timestamp_column(chars, *stamps, len(numbers[0]))
    hashes = [values[_BLOCK_HASH], values[_TX_HASH], *(span for _, span in topics)]
    block_hash, tx_hash, *topic_columns = _fixed_hex(chars, hashes, HASH_BYTES, hex_output)
    topic_columns = [
        _nulls_where_absent(c, p) for c, (p, _) in zip(topic_columns, topics, strict=True)
    ]
    data = _hex_data(chars, values[_DATA], hex_output)
    columns = [numbers[0], timestamps, block_hash, numbers[1], tx_hash, numbers[2],
               _fixed_hex(chars, [values[_ADDRESS]], ADDRESS_BYTES, hex_output)[0], *topic_columns,
               data, pa.repeat(pa.scalar(chain_id, pa.uint64()), len(data))]  # fmt: skip
    return pa.Table.from_arrays(columns, schema=log_schema(hex_output))


def _result_span(body: bytes | memoryview) -> tuple[int, int]:
    """Where the inside of the `result` array starts and ends, once the rest is known to be a
    JSON-RPC success whose only `result` is that array (as classify.decode_response reads it)."""
    match = _RESULT_OPENING.search(body)
    end = _rfind(body, b"]", len(body))  # the grammar of the inside proves the array ends there
    if _BATCH_OPENING.match(body):  # a batch of one, as some gateways answer: its ']' comes last
        end = _rfind(body, b"]", end)
    _require(match and end >= match.end())
    envelope = bytes(body[: match.end()]) + bytes(body[end:])
    _require(envelope.count(b'"result"') == 1)
    payload = orjson.loads(envelope)
    if isinstance(payload, list) and len(payload) == 1:
        payload = payload[0]
    _require(isinstance(payload, dict) and payload.get("error") is None)
    _require(payload.get("result") == [])
    return match.end(), end


def _rfind(body: bytes | memoryview, byte: bytes, end: int) -> int:
    """body.rfind(byte, 0, end), for a memoryview too (read backwards a window at a time)."""
    if isinstance(body, bytes):
        return body.rfind(byte, 0, end)
    while end > 0:
        start = max(0, end - _WINDOW)
        found = bytes(body[start:end]).rfind(byte)
        if found >= 0:
            return start + found
        end = start
    return -1


def _locate_fields(chars: np.ndarray, start: int, end: int) -> tuple[dict, list, tuple]:
    """Each string field's value (starts, ends of their characters, in log order), for each
    topic column which logs have it and where, and which logs have a blockTimestamp and where,
    if chars[start:end] is flat logs in compact JSON."""
    inside = chars[start:end]
    _require(inside.min() > 32)  # no whitespace or control byte
    quotes = np.flatnonzero(inside == ord('"'))
    quotes += start
    _require(len(quotes) and len(quotes) % 2 == 0 and chars[start : quotes[0]].tobytes() == b"{")
    opens, closes = quotes[0::2], quotes[1::2]
    closing = chars[closes[-1] + 1 : end].tobytes()
    keys, log_of, gaps, delta = _read_gaps(chars, opens, closes, closing)
    names = _KEY_PATTERNS.codes(chars, opens[keys] + 1, closes[keys] - opens[keys] - 1)
    order = np.argsort(names, kind="stable")  # keys by name, each name's in body order
    bounds = np.searchsorted(names[order], np.arange(_TIMESTAMP + 2))
    log_count = int(log_of[-1]) + 1
    _require((np.diff(bounds)[:_REMOVED] == log_count).all())
    holds = gaps[keys[order[bounds[0] :]] + 1] & 7
    optional = holds[_REMOVED * log_count :]
    removed, stamped = np.split(optional, [bounds[_TIMESTAMP] - bounds[_REMOVED]])
    # A log marked removed (or oddly) is for validate.check_not_removed to refuse.
    _require(set(removed.tolist()) <= {_HOLDS_FALSE_OR_NULL})
    stamps = _timestamp_spans(opens, closes, log_of, keys[order[bounds[_TIMESTAMP] :]], stamped)
    key_token = keys[order[bounds[0] : bounds[_REMOVED]]].reshape(_REMOVED, log_count)
    holds = holds[: _REMOVED * log_count].reshape(_REMOVED, log_count)
    # Each log has each key once, in log order.
    _require((log_of[key_token] == np.arange(log_count)).all())
    strings = np.arange(_REMOVED) != _TOPICS
    _require(
        (holds[strings] == _HOLDS_STRING).all()
        and np.isin(holds[_TOPICS], (_HOLDS_ARRAY, _HOLDS_EMPTY_ARRAY)).all()
    )
    tokens = key_token[strings] + 1  # each string field's value
    starts, ends = opens[tokens] + 1, closes[tokens]
    values = {f: (s, e) for f, s, e in zip(np.flatnonzero(strings), starts, ends, strict=True)}
    # The k-th array opened is the k-th closed; a sentinel keeps the look-up in bounds.
    opened, closed = (np.append(np.flatnonzero(delta == d), len(delta)) for d in (1, -1))
    which = np.searchsorted(opened, key_token[_TOPICS] + 1)
    count = np.where(holds[_TOPICS] == _HOLDS_ARRAY, closed[which] - opened[which], 0)
    topics = []  # topics past the fourth are in no column, as in logs_to_table
    for i in range(len(TOPIC_COLUMNS)):
        tokens = key_token[_TOPICS][count > i] + 1 + i
        topics.append((count > i, (opens[tokens] + 1, closes[tokens])))
    return values, topics, stamps


def _timestamp_spans(
    opens: np.ndarray, closes: np.ndarray, log_of: np.ndarray, keys: np.ndarray, holds: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The logs that have a blockTimestamp (each at most once: orjson would keep the last of
    two), and where its string values are; anything but a string is for the careful path."""
    logs = log_of[keys]
    _require((holds == _HOLDS_STRING).all() and (np.diff(logs) > 0).all())
    return logs, (opens[keys + 1] + 1, closes[keys + 1])


def _timestamp_column(
    chars: np.ndarray, logs: np.ndarray, span: tuple[np.ndarray, np.ndarray], count: int
) -> pa.Array:
    """blockTimestamp as seconds: null in the logs without one or with zero (never trusted)."""
    seconds = np.zeros(count, np.int64)
    if len(logs):
        (values,) = _hex_numbers(chars, [span])
        _require(values.max() <= MAX_TIMESTAMP)
        seconds[logs] = values.astype(np.int64)
    return pa.array(seconds, TIMESTAMP_TYPE, mask=seconds == 0)


def _read_gaps(chars: np.ndarray, opens: np.ndarray, closes: np.ndarray, last: bytes) -> tuple:
    """The key tokens, the log of each token, the gap codes and their array depth changes, if the
    gaps (the last one given) make an array of flat objects."""
    starts = closes[:-1] + 1
    lengths = opens[1:] - starts
    inner = np.take(_ONE_BYTE_GAPS, chars[starts])  # most gaps are one ':' or ','
    other = np.flatnonzero(lengths != 1)
    inner[other] = _GAP_PATTERNS.codes(chars, starts[other], lengths[other])
    _require(inner.min(initial=0) >= 0 and last in _CLOSING_GAPS)
    # The '{' before the first string acts as a ','.
    gaps = np.concatenate(([_COMMA_GAP], inner, [_CLOSING_GAPS[last]])).astype(np.int8)
    delta = ((gaps >> 5) & 3) - 1
    depth = np.cumsum(delta, dtype=np.int32)  # in an array of strings after this gap
    # Commas may come anywhere, a ']' only in an array, all else outside one.
    _require(depth[-1] == 0 and ((gaps == _COMMA_GAP) | (depth - delta == (delta < 0))).all())
    is_key = (depth[:-1] == 0) & (gaps[:-1] != _COLON_GAP)
    _require((((gaps[1:] >> 3) & 1) == is_key).all())  # keys, and only keys, come before a ':'
    log_of = np.cumsum((gaps[:-1] >> 4) & 1, dtype=np.int32)
    return np.flatnonzero(is_key), log_of, gaps, delta


def _byte_rows(chars: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """The `width` bytes of chars from each start, as rows (gathered as one void item each:
    fast)."""
    items = np.ndarray((len(chars) - width + 1,), np.dtype((np.void, width)), chars, 0, (1,))
    return items[starts].view(np.uint8).reshape(-1, width)


def _fixed_hex(chars: np.ndarray, spans: list, size: int, hex_output: bool) -> list[pa.Array]:
    """The 0x strings of `size` bytes of each span, as bytes (lowercase strings with hex_output);
    all spans in one go, as numpy calls cost more than their work here."""
    starts, ends = (np.concatenate(parts) for parts in zip(*spans, strict=True))
    width = 2 + 2 * size
    _require((ends - starts == width).all())
    rows = _byte_rows(chars, starts, width)
    _require((rows.view("<u2")[:, 0] == _0X_PAIR).all())
    decoded = binascii.unhexlify(rows[:, 2:].tobytes())  # strict: only hex digits, in pairs
    offsets = np.arange(len(rows) + 1, dtype=np.int32) * (width if hex_output else size)
    content = rows | 0x20 if hex_output else decoded  # 0-9, a-f and x have bit 5 already
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(content)]
    column = pa.Array.from_buffers(pa.string() if hex_output else pa.binary(), len(rows), buffers)
    cuts = np.cumsum([0, *(len(s) for s, _ in spans)]).tolist()
    return [column.slice(lo, hi - lo) for lo, hi in pairwise(cuts)]


def _nulls_where_absent(column: pa.Array, present: np.ndarray) -> pa.Array:
    """The column's values in the logs that are present, and nulls in the others."""
    if present.all():
        return column
    slots = np.cumsum(present) - 1
    return column.take(pa.array(np.maximum(slots, 0), mask=~present))


def _hex_quantities(chars: np.ndarray, spans: list) -> list[pa.Array]:
    """The 0x quantities of each span: uint64 for the first, uint32 for the others."""
    first, *rest = _hex_numbers(chars, spans)
    _require(max(r.max() for r in rest) <= 0xFFFFFFFF)
    return [pa.array(first), *(pa.array(r.astype(np.uint32)) for r in rest)]


def _hex_numbers(chars: np.ndarray, spans: list) -> list[np.ndarray]:
    """The 0x quantities (1-16 digits) of each span, as uint64."""
    starts, ends = (np.concatenate(parts) for parts in zip(*spans, strict=True))
    digits = ends - starts - 2
    _require(digits.min() >= 1 and digits.max() <= 16)
    # 0x and 16 places before each end; '"result":[{"logIndex":' comes before any value.
    rows = _byte_rows(chars, ends - 18, 18)
    flat, at = rows.ravel(), np.arange(len(rows)) * 18 + 16 - digits  # where each 0x is
    _require((flat[at] == ord("0")).all() and (flat[at + 1] == ord("x")).all())
    places, used = rows[:, 2:], _DIGIT_PLACES[digits]  # the digits right-aligned
    # Bytes wrap around: a non-hex byte stays >= 10 in `values` and >= 6 in `lower`.
    values, lower = places - ord("0"), (places | 0x20) - ord("a")
    _require(((values < 10) | (lower < 6) | ~used).all())
    nibbles = np.where(values < 10, values, lower + 10) * used  # and zeros left of the digits
    numbers = ((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).view(">u8")[:, 0].astype(np.uint64)
    return np.split(numbers, np.cumsum([len(s) for s, _ in spans])[:-1])


def _hex_data(chars: np.ndarray, span: tuple[np.ndarray, np.ndarray], hex_output: bool) -> pa.Array:
    """The 0x strings of whole bytes, as bytes (lowercase strings with hex_output)."""
    starts, ends = span
    _require((ends - starts).min() >= 2 and ((ends - starts) % 2 == 0).all())
    # Gathered in C: an array over the body whose items are alternately a value and a gap.
    bounds = np.empty(2 * len(starts), np.int32)
    bounds[0::2], bounds[1::2] = starts, ends
    everything = pa.Array.from_buffers(
        pa.binary(), len(bounds) - 1, [None, pa.py_buffer(bounds), pa.py_buffer(chars)]
    )
    strings = everything.take(pa.array(np.arange(0, len(bounds), 2)))
    offsets = np.frombuffer(strings.buffers()[1], np.int32, len(strings) + 1)
    pairs = np.frombuffer(strings.buffers()[2], "<u2", offsets[-1] // 2)  # no pair straddles two
    _require((pairs[offsets[:-1] // 2] == _0X_PAIR).all())
    keep = np.ones(len(pairs), bool)
    keep[offsets[:-1] // 2] = False
    decoded = binascii.unhexlify(pairs[keep].tobytes())
    if hex_output:
        lowered = [None, strings.buffers()[1], pa.py_buffer(pairs.view(np.uint8) | 0x20)]
        return pa.Array.from_buffers(pa.string(), len(strings), lowered)
    halved = pa.py_buffer((offsets - 2 * np.arange(len(offsets), dtype=np.int32)) // 2)
    return pa.Array.from_buffers(pa.binary(), len(strings), [None, halved, pa.py_buffer(decoded)])
