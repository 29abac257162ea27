"""Fast path: an eth_getLogs response body straight to a log_schema() table, no per-log objects.

A compact `result` array of flat log objects is read with numpy: without backslash, whitespace or
control bytes every '"' opens or closes a string, so all strings are found at once; the bytes
between strings (gaps) must be separators of compact JSON in the grammar of an array of flat
objects, so what is taken is exactly what orjson reads. Anything else is refused (None).
"""

from __future__ import annotations

import binascii
import re
from itertools import pairwise

import numpy as np
import orjson
import pyarrow as pa

from pipeline.fetch.convert import ADDRESS_BYTES, HASH_BYTES, TOPIC_COLUMNS, log_schema

_RESULT, _BATCH = re.compile(rb'"result"[ \t\n\r]*:[ \t\n\r]*\['), re.compile(rb"[ \t\n\r]*\[")
_FIELDS = (b"blockNumber", b"blockHash", b"transactionIndex", b"transactionHash", b"logIndex",
           b"address", b"topics", b"data", b"removed")  # fmt: skip
_NUMBER, _BLOCK_HASH, _TX_INDEX, _TX_HASH, _LOG_INDEX, _ADDRESS, _TOPICS, _DATA, _REMOVED = range(9)
_STR, _ARR, _EMPTY, _FALSY, _TRUTHY = range(5)  # what a key holds: a string, an array, a literal


def _code(delta: int, after_key: int, new_log: int, holds: int = 7) -> int:
    # A gap's code is its grammar: what the key before it holds (bits 0-2, 7: no key), a key
    # comes before it (bit 3), it starts a log (bit 4), its change of array depth + 1 (bits 5-6).
    return holds | after_key << 3 | new_log << 4 | (delta + 1) << 5


_INNER = {b":": _code(0, 1, 0, _STR), b":[": _code(1, 1, 0, _ARR), b",": _code(0, 0, 0),
          b"],": _code(-1, 0, 0), b"},{": _code(0, 0, 1), b"]},{": _code(-1, 0, 1)}  # fmt: skip
_LAST = {b"}": _code(0, 0, 0), b"]}": _code(-1, 0, 0)}  # the gap before the array's ']'
for _literal, _kind in ((b"[]", _EMPTY), (b"false", _FALSY), (b"null", _FALSY), (b"true", _TRUTHY)):
    _INNER[b":" + _literal + b","] = _code(0, 1, 0, _kind)
    _INNER[b":" + _literal + b"},{"] = _code(0, 1, 1, _kind)
    _LAST[b":" + _literal + b"}"] = _code(0, 1, 0, _kind)
_COLON, _COMMA = _INNER[b":"], _INNER[b","]
_ONE_BYTE_GAPS = np.full(256, -1, np.int8)
_ONE_BYTE_GAPS[ord(":")], _ONE_BYTE_GAPS[ord(",")] = _COLON, _COMMA
_0X = int.from_bytes(b"0x", "little")  # "0x" read as one uint16
_DIGITS = np.arange(16) >= 16 - np.arange(17)[:, None]  # [k]: the last k of 16 places
_MASKS = np.array([(1 << 8 * k) - 1 for k in range(8)] + [2**64 - 1], np.uint64)


class _Refused(Exception):
    """The body is not one the fast path takes."""


def _require(condition: object) -> None:
    if not condition:
        raise _Refused


def _parts(a: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, ...]:
    # Strings of up to 16 bytes are told apart exactly by their first and last 8 bytes and length.
    u64 = np.ndarray((len(a) - 7,), "<u8", a, 0, (1,))  # 8 bytes from each position; past: raises
    first = u64[starts] & np.take(_MASKS, np.minimum(lengths, 8))
    last = np.zeros_like(first)
    long = np.flatnonzero(lengths > 8)
    last[long] = u64[starts[long] + np.minimum(lengths[long], 17) - 8]
    slot = ((first ^ last) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(54)  # of 1024
    return first, last, slot.astype(np.intp)


class _Patterns:
    """A few byte strings of 1-16 bytes and their codes, in a hash table without collisions."""

    def __init__(self, patterns: dict[bytes, int]) -> None:
        table = np.frombuffer(b"".join(p.ljust(16, b"\0") for p in patterns) + bytes(8), np.uint8)
        lengths = np.array([len(p) for p in patterns])
        first, last, slot = _parts(table, np.arange(len(patterns)) * 16, lengths)
        assert len(set(slot.tolist())) == len(patterns)  # so one look-up per string settles it
        self.first, self.last = np.zeros(1024, np.uint64), np.zeros(1024, np.uint64)
        self.length, self.code = np.full(1024, -1), np.full(1024, -1, np.int8)
        self.first[slot], self.last[slot] = first, last
        self.length[slot], self.code[slot] = lengths, list(patterns.values())

    def codes(self, a: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The code of each string a[start:start+length], -1 if not a pattern."""
        first, last, slot = _parts(a, starts, lengths)
        same = (np.take(self.first, slot) == first) & (np.take(self.last, slot) == last)
        return np.where(same & (np.take(self.length, slot) == lengths), self.code[slot], -1)


_GAP_PATTERNS = _Patterns({gap: code for gap, code in _INNER.items() if len(gap) > 1})
_KEY_PATTERNS = _Patterns({name: field for field, name in enumerate(_FIELDS)})


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
    a = np.frombuffer(body, np.uint8)
    values, topics = _parse(a, start, end)
    numbers = _quantities(a, [values[_NUMBER], values[_TX_INDEX], values[_LOG_INDEX]])
    hashes = [values[_BLOCK_HASH], values[_TX_HASH], *(span for _, span in topics)]
    block_hash, tx_hash, *topic_columns = _fixed(a, hashes, HASH_BYTES, hex_output)
    topic_columns = [_spread(c, p) for c, (p, _) in zip(topic_columns, topics, strict=True)]
    data = _data(a, values[_DATA], hex_output)
    columns = [numbers[0], block_hash, numbers[1], tx_hash, numbers[2],
               _fixed(a, [values[_ADDRESS]], ADDRESS_BYTES, hex_output)[0], *topic_columns,
               data, pa.repeat(pa.scalar(chain_id, pa.uint64()), len(data))]  # fmt: skip
    return pa.Table.from_arrays(columns, schema=log_schema(hex_output))


def _result_span(body: bytes) -> tuple[int, int]:
    """Where the inside of the `result` array starts and ends, once the rest is known to be a
    JSON-RPC success whose only `result` is that array (as classify.decode_response reads it)."""
    match = _RESULT.search(body)
    end = body.rfind(b"]")  # the grammar of the inside proves that the array ends there
    if _BATCH.match(body):  # a batch of one, as some gateways answer: its own ']' comes last
        end = body.rfind(b"]", 0, end)
    _require(match and end >= match.end())
    envelope = body[: match.end()] + body[end:]
    _require(envelope.count(b'"result"') == 1)
    payload = orjson.loads(envelope)
    if isinstance(payload, list) and len(payload) == 1:
        payload = payload[0]
    _require(isinstance(payload, dict) and payload.get("error") is None)
    _require(payload.get("result") == [])
    return match.end(), end


def _parse(a: np.ndarray, start: int, end: int) -> tuple[dict, list]:
    """Each string field's value (starts, ends of their characters, in log order), and for each
    topic column which logs have it and where, if a[start:end] is flat logs in compact JSON."""
    inside = a[start:end]
    _require(inside.min() > 32)  # no whitespace or control byte
    quotes = np.flatnonzero(inside == ord('"'))
    quotes += start
    _require(len(quotes) and len(quotes) % 2 == 0 and a[start : quotes[0]].tobytes() == b"{")
    opens, closes = quotes[0::2], quotes[1::2]
    keys, log_of, gaps, delta = _grammar(a, opens, closes, a[closes[-1] + 1 : end].tobytes())
    names = _KEY_PATTERNS.codes(a, opens[keys] + 1, closes[keys] - opens[keys] - 1)
    order = np.argsort(names, kind="stable")  # keys by name, each name's in body order
    bounds = np.searchsorted(names[order], np.arange(_REMOVED + 2))
    n = int(log_of[-1]) + 1
    _require((np.diff(bounds)[:_REMOVED] == n).all())
    holds = gaps[keys[order[bounds[0] :]] + 1] & 7
    # A log marked removed (or oddly) is for validate.check_not_removed to refuse.
    _require(set(holds[_REMOVED * n :].tolist()) <= {_FALSY})
    at = keys[order[bounds[0] : bounds[_REMOVED]]].reshape(_REMOVED, n)
    holds = holds[: _REMOVED * n].reshape(_REMOVED, n)
    _require((log_of[at] == np.arange(n)).all())  # each log has each key once, in log order
    strings = np.arange(_REMOVED) != _TOPICS
    _require((holds[strings] == _STR).all() and np.isin(holds[_TOPICS], (_ARR, _EMPTY)).all())
    tokens = at[strings] + 1  # each string field's value
    starts, ends = opens[tokens] + 1, closes[tokens]
    values = {f: (s, e) for f, s, e in zip(np.flatnonzero(strings), starts, ends, strict=True)}
    # The k-th array opened is the k-th closed; a sentinel keeps the look-up in bounds.
    opened, closed = (np.append(np.flatnonzero(delta == d), len(delta)) for d in (1, -1))
    which = np.searchsorted(opened, at[_TOPICS] + 1)
    count = np.where(holds[_TOPICS] == _ARR, closed[which] - opened[which], 0)
    topics = []  # topics past the fourth are in no column, as in logs_to_table
    for i in range(len(TOPIC_COLUMNS)):
        tokens = at[_TOPICS][count > i] + 1 + i
        topics.append((count > i, (opens[tokens] + 1, closes[tokens])))
    return values, topics


def _grammar(a: np.ndarray, opens: np.ndarray, closes: np.ndarray, last: bytes) -> tuple:
    """The key tokens, the log of each token, the gap codes and their array depth changes, if the
    gaps (the last one given) make an array of flat objects."""
    starts = closes[:-1] + 1
    lengths = opens[1:] - starts
    inner = np.take(_ONE_BYTE_GAPS, a[starts])  # most gaps are one ':' or ','
    other = np.flatnonzero(lengths != 1)
    inner[other] = _GAP_PATTERNS.codes(a, starts[other], lengths[other])
    _require(inner.min(initial=0) >= 0 and last in _LAST)
    gaps = np.concatenate(([_COMMA], inner, [_LAST[last]])).astype(np.int8)  # '{' acts as ','
    delta = ((gaps >> 5) & 3) - 1
    depth = np.cumsum(delta, dtype=np.int32)  # in an array of strings after this gap
    # Commas may come anywhere, a ']' only in an array, all else outside one.
    _require(depth[-1] == 0 and ((gaps == _COMMA) | (depth - delta == (delta < 0))).all())
    is_key = (depth[:-1] == 0) & (gaps[:-1] != _COLON)
    _require((((gaps[1:] >> 3) & 1) == is_key).all())  # keys, and only keys, come before a ':'
    log_of = np.cumsum((gaps[:-1] >> 4) & 1, dtype=np.int32)
    return np.flatnonzero(is_key), log_of, gaps, delta


def _rows(a: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """The `width` bytes of a from each start, as rows (gathered as one void item each: fast)."""
    items = np.ndarray((len(a) - width + 1,), np.dtype((np.void, width)), a, 0, (1,))
    return items[starts].view(np.uint8).reshape(-1, width)


def _fixed(a: np.ndarray, spans: list, size: int, hex_output: bool) -> list[pa.Array]:
    """The 0x strings of `size` bytes of each span, as bytes (lowercase strings with hex_output);
    all spans in one go, as numpy calls cost more than their work here."""
    starts, ends = (np.concatenate(parts) for parts in zip(*spans, strict=True))
    width = 2 + 2 * size
    _require((ends - starts == width).all())
    rows = _rows(a, starts, width)
    _require((rows.view("<u2")[:, 0] == _0X).all())
    decoded = binascii.unhexlify(rows[:, 2:].tobytes())  # strict: only hex digits, in pairs
    offsets = np.arange(len(rows) + 1, dtype=np.int32) * (width if hex_output else size)
    content = rows | 0x20 if hex_output else decoded  # 0-9, a-f and x have bit 5 already
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(content)]
    column = pa.Array.from_buffers(pa.string() if hex_output else pa.binary(), len(rows), buffers)
    cuts = np.cumsum([0, *(len(s) for s, _ in spans)]).tolist()
    return [column.slice(lo, hi - lo) for lo, hi in pairwise(cuts)]


def _spread(column: pa.Array, present: np.ndarray) -> pa.Array:
    """The column's values in the logs that are present, and nulls in the others."""
    if present.all():
        return column
    slots = np.cumsum(present) - 1
    return column.take(pa.array(np.maximum(slots, 0), mask=~present))


def _quantities(a: np.ndarray, spans: list) -> list[pa.Array]:
    """The 0x quantities of each span: uint64 for the first, uint32 for the others."""
    starts, ends = (np.concatenate(parts) for parts in zip(*spans, strict=True))
    digits = ends - starts - 2
    _require(digits.min() >= 1 and digits.max() <= 16)
    rows = _rows(a, ends - 18, 18)  # 0x and 16 places; '"result":[{"logIndex":' is before any
    flat, at = rows.ravel(), np.arange(len(rows)) * 18 + 16 - digits  # where each 0x is
    _require((flat[at] == ord("0")).all() and (flat[at + 1] == ord("x")).all())
    chars, used = rows[:, 2:], _DIGITS[digits]  # the digits right-aligned
    values, lower = chars - ord("0"), (chars | 0x20) - ord("a")  # bytes wrap: non-hex stay >= 10, 6
    _require(((values < 10) | (lower < 6) | ~used).all())
    nibbles = np.where(values < 10, values, lower + 10) * used  # and zeros left of the digits
    numbers = ((nibbles[:, 0::2] << 4) | nibbles[:, 1::2]).view(">u8")[:, 0].astype(np.uint64)
    first, *rest = np.split(numbers, len(spans))
    _require(max(r.max() for r in rest) <= 0xFFFFFFFF)
    return [pa.array(first), *(pa.array(r.astype(np.uint32)) for r in rest)]


def _data(a: np.ndarray, span: tuple[np.ndarray, np.ndarray], hex_output: bool) -> pa.Array:
    """The 0x strings of whole bytes, as bytes (lowercase strings with hex_output)."""
    starts, ends = span
    _require((ends - starts).min() >= 2 and ((ends - starts) % 2 == 0).all())
    # Gathered in C: an array over the body whose items are alternately a value and a gap.
    bounds = np.empty(2 * len(starts), np.int32)
    bounds[0::2], bounds[1::2] = starts, ends
    everything = pa.Array.from_buffers(
        pa.binary(), len(bounds) - 1, [None, pa.py_buffer(bounds), pa.py_buffer(a)]
    )
    strings = everything.take(pa.array(np.arange(0, len(bounds), 2)))
    offsets = np.frombuffer(strings.buffers()[1], np.int32, len(strings) + 1)
    pairs = np.frombuffer(strings.buffers()[2], "<u2", offsets[-1] // 2)  # no pair straddles two
    _require((pairs[offsets[:-1] // 2] == _0X).all())
    keep = np.ones(len(pairs), bool)
    keep[offsets[:-1] // 2] = False
    decoded = binascii.unhexlify(pairs[keep].tobytes())
    if hex_output:
        lowered = [None, strings.buffers()[1], pa.py_buffer(pairs.view(np.uint8) | 0x20)]
        return pa.Array.from_buffers(pa.string(), len(strings), lowered)
    halved = pa.py_buffer((offsets - 2 * np.arange(len(offsets), dtype=np.int32)) // 2)
    return pa.Array.from_buffers(pa.binary(), len(strings), [None, halved, pa.py_buffer(decoded)])
