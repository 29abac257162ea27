"""The fast path (fastlogs.body_to_table) against the careful path (orjson + logs_to_table): the
same table, or None so the careful path decides; never a different table, never an exception."""

from __future__ import annotations

import json
import random

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import RpcError
from pipeline.fetch.classify import decode_response
from pipeline.fetch.convert import log_schema, logs_to_table
from pipeline.fetch.fastlogs import body_to_table, body_to_table_in_pieces
from pipeline.fetch.validate import check_not_removed

CHAIN = 31337
KEYS = ("address", "topics", "data", "blockHash", "blockNumber", "transactionHash",
        "transactionIndex", "logIndex")  # fmt: skip


def careful(body: bytes, hex_output: bool) -> pa.Table | None:
    """What the worker makes of a 200 response today; None where it refuses the body. Only an
    RpcError is a refusal: any other exception fails the test (an OverflowError once went
    unnoticed here and killed workers)."""
    try:
        logs = decode_response(200, {}, body)
        if not isinstance(logs, list):
            return None  # RpcClient.logs_result refuses it as malformed
        check_not_removed(logs)
        return logs_to_table(logs, CHAIN, hex_output)
    except RpcError:
        return None


def agree(body: bytes, hex_output: bool) -> pa.Table | None:
    """Assert the fast path gives the careful table or None, and return what it gave; the
    careful path reads every body too, so that an exception other than a refusal fails."""
    fast = body_to_table(body, CHAIN, hex_output)
    slow = careful(body, hex_output)
    if fast is not None:
        assert slow is not None, body[:300]
        fast.validate(full=True)
        assert fast.schema == log_schema(hex_output)
        assert fast.equals(slow), body[:300]
    return fast


def hexstr(rng: random.Random, size: int, mixed: bool = False) -> str:
    digits = rng.randbytes(size).hex()
    if mixed:
        digits = "".join(c.upper() if rng.random() < 0.5 else c for c in digits)
    return "0x" + digits


def make_log(rng: random.Random, i: int, mixed: bool = False, extras: bool = True) -> dict:
    log = {
        "address": hexstr(rng, 20, mixed),
        "topics": [hexstr(rng, 32, mixed) for _ in range(rng.randint(0, 4))],
        "data": hexstr(rng, rng.choice([0, 1, 31, 32, 64, 96, rng.randint(0, 300)]), mixed),
        "blockHash": hexstr(rng, 32, mixed),
        "blockNumber": hex(rng.choice([0, 1, 2**32, 2**64 - 1, 20_000_000 + i])),
        "transactionHash": hexstr(rng, 32, mixed),
        "transactionIndex": hex(rng.choice([0, 9, 2**32 - 1, i])),
        "logIndex": hex(rng.choice([0, 15, 2**32 - 1, i])),
    }
    if extras:
        log.update(blockTimestamp=hex(1_700_000_000 + i), removed=False)
        if rng.random() < 0.3:
            log.update(transactionLogIndex="0x0", type="mined", extra=None, flag=True, tags=["a"])
    return log


def anvil_log(rng: random.Random, i: int) -> dict:
    """A log as anvil sends it: same keys, same order, 1-3 topics, lowercase hex."""
    log = make_log(rng, i)
    log["topics"] = log["topics"][:3] or [hexstr(rng, 32)]
    order = ("address", "topics", "data", "blockHash", "blockNumber", "blockTimestamp",
             "transactionHash", "transactionIndex", "logIndex", "removed")  # fmt: skip
    return {key: log[key] for key in order}


def envelope(result: object) -> dict:
    return {"jsonrpc": "2.0", "id": 7, "result": result}


def body_of(logs: list[dict]) -> bytes:
    return orjson.dumps(envelope(logs))


def shuffled(rng: random.Random, log: dict) -> dict:
    items = list(log.items())
    rng.shuffle(items)
    return dict(items)


# --- the same table ------------------------------------------------------------------------


@pytest.mark.parametrize("hex_output", [False, True])
@pytest.mark.parametrize("count", [1, 2, 37, 500])
def test_anvil_shaped_bodies_take_the_fast_path_and_give_the_careful_table(count, hex_output):
    rng = random.Random(count)
    body = body_of([anvil_log(rng, i) for i in range(count)])
    assert agree(body, hex_output) is not None


@pytest.mark.parametrize("hex_output", [False, True])
def test_compact_bodies_of_any_key_order_case_and_extras_take_the_fast_path(hex_output):
    rng = random.Random(1)
    for round_ in range(60):
        logs = [shuffled(rng, make_log(rng, i, mixed=round_ % 2 == 1, extras=round_ % 3 > 0))
                for i in range(rng.choice([1, 2, 5, 40]))]  # fmt: skip
        assert agree(body_of(logs), hex_output) is not None


@pytest.mark.parametrize("hex_output", [False, True])
def test_pretty_and_spaced_bodies_never_differ_from_the_careful_path(hex_output):
    rng = random.Random(2)
    for _ in range(30):
        result = [shuffled(rng, make_log(rng, i, mixed=True)) for i in range(rng.randint(0, 6))]
        pretty = orjson.dumps(envelope(result), option=orjson.OPT_INDENT_2)
        spaced = json.dumps(envelope(result), separators=(" , ", " : ")).encode()
        agree(pretty, hex_output)
        agree(spaced, hex_output)
        # Whitespace around a compact array is no reason to leave the fast path.
        assert agree(b"\n  " + body_of(result) + b"  \n", hex_output) is not None


@pytest.mark.parametrize("hex_output", [False, True])
def test_an_empty_result_is_an_empty_table(hex_output):
    for body in (body_of([]), b'{"jsonrpc":"2.0","id":1,"result":[ ]}'):
        table = agree(body, hex_output)
        assert table is not None and table.num_rows == 0


def test_topic_columns_are_null_where_a_log_has_fewer_topics():
    rng = random.Random(3)
    logs = [anvil_log(rng, i) for i in range(6)]
    for log, count in zip(logs, [0, 1, 2, 3, 4, 0], strict=True):
        log["topics"] = [hexstr(rng, 32) for _ in range(count)]
    table = agree(body_of(logs), False)
    assert table is not None
    assert [table[f"topic{i}"].null_count for i in range(4)] == [2, 3, 4, 5]
    logs = [dict(log, topics=[]) for log in logs]  # no log has any topic
    assert agree(body_of(logs), True).column("topic0").null_count == 6


def test_topics_past_the_fourth_are_in_no_column_as_on_the_careful_path():
    rng = random.Random(11)
    logs = [anvil_log(rng, i) for i in range(3)]
    logs[1]["topics"] = [hexstr(rng, 32) for _ in range(6)]
    assert agree(body_of(logs), False) is not None


def test_hex_output_lowercases_and_binary_output_decodes():
    log = anvil_log(random.Random(4), 0) | {"address": "0x" + "AbCdEf" * 6 + "ABcd"}
    strings, raw = agree(body_of([log]), True), agree(body_of([log]), False)
    assert strings["address"][0].as_py() == log["address"].lower()
    assert raw["address"][0].as_py() == bytes.fromhex(log["address"][2:])


def test_quantities_keep_leading_zeros_and_the_extremes():
    log = anvil_log(random.Random(5), 0)
    log |= {"blockNumber": "0x" + "f" * 16, "transactionIndex": "0x0000ffffffff", "logIndex": "0x0"}
    table = agree(body_of([log]), False)
    assert table.select(["block_number", "transaction_index", "log_index"]).to_pylist() == [
        {"block_number": 2**64 - 1, "transaction_index": 2**32 - 1, "log_index": 0}
    ]


def test_envelope_in_any_order_and_a_batch_of_one_take_the_fast_path():
    logs = [anvil_log(random.Random(6), i) for i in range(3)]
    for body in (
        orjson.dumps({"result": logs, "id": "x", "jsonrpc": "2.0"}),
        orjson.dumps([envelope(logs)]),
        b'{"id":1,"jsonrpc":"2.0","result":' + orjson.dumps(logs) + b"}",
    ):
        assert agree(body, False) is not None


def test_removed_false_null_or_absent_are_all_taken():
    rng = random.Random(9)
    logs = [anvil_log(rng, i) for i in range(3)]
    logs[0]["removed"], logs[1]["removed"] = None, False
    del logs[2]["removed"]
    assert agree(body_of(logs), False) is not None


def test_block_timestamps_are_read_and_zero_or_absent_ones_are_null():
    rng = random.Random(13)
    logs = [anvil_log(rng, i) for i in range(5)]
    logs[1]["blockTimestamp"] = "0x0"
    logs[2]["blockTimestamp"] = "0x00000000"
    del logs[3]["blockTimestamp"]
    logs[4]["blockTimestamp"] = "0x" + "7" + "f" * 15  # the latest second the column holds
    for hex_output in (False, True):
        table = agree(body_of(logs), hex_output)
        assert table is not None
        assert table.schema.field("block_timestamp").type == pa.timestamp("s", tz="UTC")
        seconds = table["block_timestamp"].cast(pa.int64()).to_pylist()
        assert seconds == [int(logs[0]["blockTimestamp"], 16), None, None, None, 2**63 - 1]


def test_no_log_with_a_block_timestamp_gives_a_column_of_nulls():
    logs = [anvil_log(random.Random(14), i) for i in range(4)]
    for log in logs:
        del log["blockTimestamp"]
    table = agree(body_of(logs), False)
    assert table is not None and table["block_timestamp"].null_count == 4


def test_the_table_survives_a_parquet_round_trip():
    rng = random.Random(10)
    logs = [anvil_log(rng, i) for i in range(50)]
    logs[3]["blockTimestamp"] = "0x0"  # null, as is a log without one
    del logs[4]["blockTimestamp"]
    for hex_output in (False, True):
        table = agree(body_of(logs), hex_output)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        read = pq.read_table(sink.getvalue())
        # Parquet has no unit of seconds: the same instants come back in milliseconds.
        assert read.schema.field("block_timestamp").type == pa.timestamp("ms", tz="UTC")
        assert read.cast(log_schema(hex_output)).equals(careful(body_of(logs), hex_output))
        assert read["block_timestamp"].null_count == 2


# --- None: the careful path decides --------------------------------------------------------


def _bad_bodies() -> dict[str, bytes]:
    rng = random.Random(7)
    good = [anvil_log(rng, i) for i in range(3)]
    body = body_of(good)

    def changed(**fields: object) -> bytes:
        return body_of([good[0], {**good[1], **fields}, good[2]])

    missing = {f"missing {key}": body_of([{k: v for k, v in good[0].items() if k != key}])
               for key in KEYS}  # fmt: skip
    return missing | {
        "truncated": body[: len(body) // 2],
        "truncated in the last log": body[:-10],
        "not json": b"<html>502 Bad Gateway</html>",
        "empty body": b"",
        "error envelope": b'{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"too many"}}',
        "error beside a result": b'{"jsonrpc":"2.0","id":1,"error":{"code":1},"result":[]}',
        "result null": b'{"jsonrpc":"2.0","id":1,"result":null}',
        "result an object": b'{"jsonrpc":"2.0","id":1,"result":{"a":[1]}}',
        "result a string": b'{"jsonrpc":"2.0","id":1,"result":"[]"}',
        "no result": b'{"jsonrpc":"2.0","id":1}',
        "a batch of two": orjson.dumps([envelope(good), envelope(good)]),
        "result twice": b'{"result":[],"result":' + orjson.dumps(good) + b"}",
        "result twice, array first": body[:-1] + b',"result":null}',
        "result inside another key": b'{"x":{"result":' + orjson.dumps(good) + b'},"result":[]}',
        "a second array after result": body[:-1] + b',"more":["x"]}',
        "removed true": changed(removed=True),
        "removed a string": changed(removed="yes"),
        "removed an empty array": changed(removed=[]),
        "odd-length data": changed(data="0xabc"),
        "non-hex data": changed(data="0xzz"),
        "data without 0x": changed(data="abcd"),
        "data 0X": changed(data="0XABCD"),
        "data a number": changed(data=5),
        "data null": changed(data=None),
        "short hash": changed(blockHash="0x" + "ab" * 31),
        "long address": changed(address="0x" + "ab" * 21),
        "non-hex transaction hash": changed(transactionHash="0x" + "g" * 64),
        "hash with 0X": changed(blockHash="0X" + "ab" * 32),
        "non-hex topic": changed(topics=["0x" + "q" * 64]),
        "short topic": changed(topics=["0x" + "ab" * 31]),
        "topic null": changed(topics=[None]),
        "topics null": changed(topics=None),
        "topics a string": changed(topics="0x" + "ab" * 32),
        "nested topics": changed(topics=[["0x" + "ab" * 32]]),
        "quantity an integer": changed(blockNumber=5),
        "quantity without 0x": changed(blockNumber="1a"),
        "quantity 0x": changed(logIndex="0x"),
        "quantity 17 digits": changed(blockNumber="0x1" + "0" * 16),
        "quantity non-hex": changed(transactionIndex="0xg"),
        "quantity negative": changed(blockNumber="-0x1"),
        "log index past uint32": changed(logIndex="0x100000000"),
        "timestamp a number": changed(blockTimestamp=1_700_000_000),
        "timestamp null": changed(blockTimestamp=None),  # the careful path takes it: a null
        "timestamp not hex": changed(blockTimestamp="0xzz"),
        "timestamp without 0x": changed(blockTimestamp="6b0be2b2"),
        "timestamp past int64": changed(blockTimestamp="0x8000000000000000"),
        "timestamp 17 digits": changed(blockTimestamp="0x0" + "1" * 16),
        "timestamp twice": body.replace(
            b'"blockTimestamp"', b'"blockTimestamp":"0x5","blockTimestamp"', 1
        ),
        "transaction index past uint32": changed(transactionIndex="0x100000000"),
        "nested object": changed(extra={"a": "b"}),
        "a number in an extra key": changed(extra=1.5),
        "a log that is not an object": body_of([good[0], "x"]),
        "an empty log": body_of([good[0], {}]),
        "duplicate key": body.replace(b'"logIndex"', b'"logIndex":"0x5","logIndex"', 1),
        "NaN in an extra key": body.replace(b'"removed":false', b'"x":NaN', 1),
        "an escape": body.replace(b'"0x', b'"\\u0030x', 1),
        "non-ascii": body.replace(b'"removed"', '"rémoved"'.encode(), 1),
        "a control byte in a string": body.replace(b'"removed"', b'"re\x01moved"', 1),
        "trailing comma": body.replace(b"}]", b"},]", 1),
        "missing comma": body.replace(b"},{", b"}{", 1),
    }


BAD = _bad_bodies()


@pytest.mark.parametrize("hex_output", [False, True])
@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_bodies_give_none(name, hex_output):
    assert body_to_table(BAD[name], CHAIN, hex_output) is None
    careful(BAD[name], hex_output)  # a table or a refusal, never another exception


@pytest.mark.parametrize("hex_output", [False, True])
def test_fuzzed_bodies_never_differ_from_the_careful_path(hex_output):
    rng = random.Random(8)
    alphabet = b'{}[],:"0xaAfFgG1 \n-etrunl\\'
    bodies = [body_of([anvil_log(rng, i) for i in range(rng.randint(1, 3))]) for _ in range(20)]
    for _ in range(3000):
        body = bytearray(rng.choice(bodies))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(body))
            action = rng.randrange(3)
            if action == 0:
                body[at] = rng.choice(alphabet)
            elif action == 1:
                del body[at]
            else:
                body[at:at] = body[at : at + rng.randint(1, 40)]
        agree(bytes(body), hex_output)


def _odd_value(rng: random.Random, depth: int = 0) -> object:
    """A JSON value of the kinds providers might put in a log, and some they should not."""
    kind = rng.randrange(6 if depth < 2 else 3)
    if kind == 0:
        return rng.choice(["", "x", "0x", "0x1", "0xAB", "},{", "[", ":", "a b", "é", '"', "\\"])
    if kind == 1:
        return rng.choice([True, False, None, 0, -1, 1.5, 10**20, 1e300])
    if kind == 2:
        return hexstr(rng, rng.choice([0, 1, 20, 32, 33]), rng.random() < 0.5)
    if kind == 3:
        return [_odd_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == 4:
        return {rng.choice(KEYS): _odd_value(rng, depth + 1) for _ in range(rng.randint(0, 2))}
    return [hexstr(rng, 32) for _ in range(rng.randint(0, 6))]


@pytest.mark.parametrize("hex_output", [False, True])
def test_logs_with_odd_values_and_repeated_keys_never_differ_from_the_careful_path(hex_output):
    rng = random.Random(12)
    names = [*KEYS, "removed", "blockTimestamp", "dat", "data2", "Data", "blockHashX", "result"]
    for _ in range(400):
        logs = [shuffled(rng, make_log(rng, i, mixed=rng.random() < 0.5)) for i in range(2)]
        for _ in range(rng.randint(0, 2)):
            log = rng.choice(logs)
            if rng.random() < 0.7:
                log[rng.choice(names)] = _odd_value(rng)
            else:
                log.pop(rng.choice(list(log)), None)
        body = json.dumps(envelope(logs), separators=(",", ":"), ensure_ascii=False).encode()
        if rng.random() < 0.3:  # a key twice in one log: orjson keeps the last
            key = json.dumps(rng.choice(names)).encode()
            again = json.dumps(_odd_value(rng), separators=(",", ":")).encode()
            body = body.replace(key + b":", key + b":" + again + b"," + key + b":", 1)
        agree(body, hex_output)


@pytest.mark.parametrize("piece_bytes", [1, 700, 5_000, 10**9])
def test_a_body_read_in_pieces_gives_the_same_table(piece_bytes):
    rng = random.Random(piece_bytes)
    body = body_of([anvil_log(rng, i) for i in range(300)])
    whole = body_to_table(body, CHAIN, False)
    assert whole is not None
    pieces = body_to_table_in_pieces(body, CHAIN, False, piece_bytes)
    assert pieces is not None and pieces.equals(whole)


def test_a_bad_piece_sends_the_whole_body_the_careful_way():
    rng = random.Random(5)
    logs = [anvil_log(rng, i) for i in range(50)]
    logs[40]["data"] = "0xZZ"
    assert body_to_table_in_pieces(body_of(logs), CHAIN, False, 500) is None
