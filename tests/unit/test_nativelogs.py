"""The C parser (_fastlogs.c via nativelogs.native_table) against the numpy parser and the careful
path: the same table, or None so they decide; never a different table, never a crash."""

from __future__ import annotations

import gc
import json
import random

import orjson
import pyarrow as pa
import pytest
from test_fastlogs import (
    BAD,
    CHAIN,
    _odd_value,
    anvil_log,
    body_of,
    careful,
    envelope,
    hexstr,
    make_log,
    shuffled,
)

from pipeline.fetch import fastlogs, nativelogs
from pipeline.fetch.convert import log_schema

_fastlogs = pytest.importorskip(
    "pipeline.fetch._fastlogs", reason="the C parser is not built (no compiler at install time)"
)


def agree(body: bytes, hex_output: bool) -> pa.Table | None:
    """Assert the C parser gives the careful table (and the numpy one, when numpy takes the body)
    or None, and return what it gave."""
    native = nativelogs.native_table(body, CHAIN, hex_output)
    slow = careful(body, hex_output)  # also: any exception but a refusal fails the test
    if native is not None:
        assert slow is not None, body[:300]
        native.validate(full=True)
        assert native.schema == log_schema(hex_output)
        assert native.equals(slow), body[:300]
        numpy = fastlogs.body_to_table(body, CHAIN, hex_output)
        assert numpy is None or native.equals(numpy), body[:300]
    return native


def taken(body: bytes, hex_output: bool) -> pa.Table:
    """agree(), and the C parser and the numpy parser both took the body."""
    native = agree(body, hex_output)
    assert native is not None, body[:300]
    assert fastlogs.body_to_table(body, CHAIN, hex_output) is not None
    return native


def with_log(fields: dict) -> bytes:
    rng = random.Random(20)
    logs = [anvil_log(rng, i) for i in range(3)]
    logs[1].update(fields)
    return body_of(logs)


# --- the same table ------------------------------------------------------------------------


def test_the_extension_is_in_use_when_built():
    assert nativelogs.NATIVE


@pytest.mark.parametrize("hex_output", [False, True])
@pytest.mark.parametrize("count", [1, 2, 37, 500, 5000])
def test_anvil_shaped_bodies_give_the_numpy_and_careful_table(count, hex_output):
    rng = random.Random(count)
    taken(body_of([anvil_log(rng, i) for i in range(count)]), hex_output)


@pytest.mark.parametrize("hex_output", [False, True])
def test_random_bodies_of_any_key_order_case_and_extras_give_the_same_table(hex_output):
    rng = random.Random(1)
    for round_ in range(100):
        logs = [shuffled(rng, make_log(rng, i, mixed=round_ % 2 == 1, extras=round_ % 3 > 0))
                for i in range(rng.choice([1, 2, 5, 40, 300]))]  # fmt: skip
        taken(body_of(logs), hex_output)


@pytest.mark.parametrize("hex_output", [False, True])
def test_an_empty_result_is_an_empty_table(hex_output):
    for body in (body_of([]), b'{"jsonrpc":"2.0","id":1,"result":[ ]}'):
        table = agree(body, hex_output)
        assert table is not None and table.num_rows == 0


def test_topic_columns_are_null_where_a_log_has_fewer_topics_and_past_the_fourth_ignored():
    rng = random.Random(3)
    logs = [anvil_log(rng, i) for i in range(7)]
    for log, count in zip(logs, [0, 1, 2, 3, 4, 0, 6], strict=True):
        log["topics"] = [hexstr(rng, 32) for _ in range(count)]
    table = taken(body_of(logs), False)
    assert [table[f"topic{i}"].null_count for i in range(4)] == [2, 3, 4, 5]
    no_topics = [dict(log, topics=[]) for log in logs]
    assert taken(body_of(no_topics), True).column("topic0").null_count == 7


def test_hex_output_lowercases_and_binary_output_decodes():
    log = anvil_log(random.Random(4), 0) | {"address": "0x" + "AbCdEf" * 6 + "ABcd"}
    log["data"] = "0xABcdEF"
    strings, raw = taken(body_of([log]), True), taken(body_of([log]), False)
    assert strings["address"][0].as_py() == log["address"].lower()
    assert strings["data"][0].as_py() == "0xabcdef"
    assert raw["address"][0].as_py() == bytes.fromhex(log["address"][2:])
    assert raw["data"][0].as_py() == b"\xab\xcd\xef"


def test_quantities_keep_leading_zeros_and_the_extremes():
    log = anvil_log(random.Random(5), 0)
    log |= {"blockNumber": "0x" + "f" * 16, "transactionIndex": "0x0000ffffffff", "logIndex": "0x0"}
    table = taken(body_of([log]), False)
    assert table.select(["block_number", "transaction_index", "log_index"]).to_pylist() == [
        {"block_number": 2**64 - 1, "transaction_index": 2**32 - 1, "log_index": 0}
    ]


def test_envelope_in_any_order_a_batch_of_one_and_spaces_around_the_array_are_taken():
    logs = [anvil_log(random.Random(6), i) for i in range(3)]
    for body in (
        orjson.dumps({"result": logs, "id": "x", "jsonrpc": "2.0"}),
        orjson.dumps([envelope(logs)]),
        b'{"id":1,"jsonrpc":"2.0","result":' + orjson.dumps(logs) + b"}",
        b'\n {"id":1, "result" : ' + orjson.dumps(logs) + b" }\n",
    ):
        taken(body, False)


def test_block_timestamps_zero_or_absent_are_null_and_the_rest_read_exactly():
    rng = random.Random(19)
    logs = [anvil_log(rng, i) for i in range(20)]
    for i, log in enumerate(logs):
        if i % 3 == 0:
            del log["blockTimestamp"]
        elif i % 3 == 1:
            log["blockTimestamp"] = rng.choice(["0x0", "0x00", "0x" + "0" * 16])
    for hex_output in (False, True):
        table = taken(body_of(logs), hex_output)
        seconds = table["block_timestamp"].cast(pa.int64()).to_pylist()
        expected = [int(log["blockTimestamp"], 16) or None if "blockTimestamp" in log else None
                    for log in logs]  # fmt: skip
        assert seconds == expected and table["block_timestamp"].null_count == 14


def test_a_block_timestamp_twice_or_not_a_string_is_refused():
    body = body_of([anvil_log(random.Random(21), i) for i in range(2)])
    twice = body.replace(b'"blockTimestamp"', b'"blockTimestamp":"0x1","blockTimestamp"', 1)
    for refused in (twice, body.replace(b'"blockTimestamp":"', b'"blockTimestamp":null,"x":"', 1)):
        assert nativelogs.native_table(refused, CHAIN, False) is None
        agree(refused, False)


def test_removed_false_null_or_absent_are_all_taken():
    rng = random.Random(9)
    logs = [anvil_log(rng, i) for i in range(3)]
    logs[0]["removed"], logs[1]["removed"] = None, False
    del logs[2]["removed"]
    taken(body_of(logs), False)


def test_the_table_outlives_the_parse_and_keeps_its_buffers():
    rng = random.Random(10)
    body = body_of([anvil_log(rng, i) for i in range(200)])
    table = nativelogs.native_table(body, CHAIN, False)
    expected = careful(body, False)
    del body
    gc.collect()
    table.validate(full=True)
    assert table.equals(expected)


@pytest.mark.parametrize("hex_output", [False, True])
def test_the_columns_take_less_memory_than_the_body(hex_output):
    # Output columns are all the C parser keeps, so its peak is the body plus less than the body.
    rng = random.Random(13)
    body = body_of([anvil_log(rng, i) for i in range(2000)])
    table = taken(body, hex_output)
    assert table.nbytes < len(body)


# --- refused: the numpy parser or the careful path decides ---------------------------------


@pytest.mark.parametrize("hex_output", [False, True])
def test_pretty_printed_and_spaced_bodies_are_refused(hex_output):
    rng = random.Random(2)
    for _ in range(30):
        result = [shuffled(rng, make_log(rng, i, mixed=True)) for i in range(rng.randint(1, 6))]
        pretty = orjson.dumps(envelope(result), option=orjson.OPT_INDENT_2)
        spaced = json.dumps(envelope(result), separators=(" , ", " : ")).encode()
        one_space = body_of(result).replace(b'"data":"', b'"data": "', 1)
        for body in (pretty, spaced, one_space):
            assert agree(body, hex_output) is None


@pytest.mark.parametrize("hex_output", [False, True])
def test_escaped_strings_are_refused(hex_output):
    body = body_of([anvil_log(random.Random(14), i) for i in range(2)])
    for escaped in (
        body.replace(b'"0x', b'"\\u0030x', 1),  # a value
        body.replace(b'"data"', b'"d\\u0061ta"', 1),  # a key orjson reads as "data"
        body.replace(b'"removed":false', b'"note":"a\\"b","removed":false', 1),  # another key
        body.replace(b'"jsonrpc"', b'"json\\u0072pc"', 1),  # the envelope
        body.replace(b'"removed":false', b'"note":"\\n","removed":false', 1),
    ):
        assert agree(escaped, hex_output) is None


@pytest.mark.parametrize("hex_output", [False, True])
@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_bodies_are_refused_or_give_the_careful_table(name, hex_output):
    agree(BAD[name], hex_output)


@pytest.mark.parametrize(
    "fields",
    [
        {"logIndex": "0x" + "f" * 18},
        {"logIndex": "0x" + "f" * 9},
        {"transactionIndex": "0x" + "f" * 18},
        {"blockNumber": "0x" + "f" * 17},
        {"blockNumber": "0x" + "f" * 18},
        {"blockNumber": "0x" + "0" * 17 + "1"},  # 17 digits, although the value is small
        {"blockNumber": "0x1" + "0" * 16},
        {"blockTimestamp": "0x8000000000000000"},  # past the column's int64
        {"blockTimestamp": "0x" + "f" * 17},
    ],
    ids=lambda fields: "-".join(f"{k}={v}" for k, v in fields.items()),
)
def test_huge_quantities_are_refused_never_wrapped(fields):
    body = with_log(fields)
    assert nativelogs.native_table(body, CHAIN, False) is None
    agree(body, False)


@pytest.mark.parametrize(
    "fields",
    [
        {"data": "0xabc"},
        {"data": "0x0"},
        {"blockHash": "0x" + "a" * 63},
        {"transactionHash": "0x" + "a" * 65},
        {"address": "0x" + "a" * 39},
        {"topics": ["0x" + "a" * 63]},
        {"topics": ["0x" + "ab" * 32, "0x" + "a" * 65]},
    ],
    ids=lambda fields: next(iter(fields)) + str(len(str(next(iter(fields.values()))))),
)
@pytest.mark.parametrize("hex_output", [False, True])
def test_odd_length_hex_is_refused(fields, hex_output):
    assert agree(with_log(fields), hex_output) is None


@pytest.mark.parametrize("column", ["blockHash", "transactionHash", "address", "topic0", "topic3"])
@pytest.mark.parametrize("change", [-1, +1, -32, +4])
@pytest.mark.parametrize("hex_output", [False, True])
def test_hex_of_the_wrong_width_is_refused(column, change, hex_output):
    size = 20 if column == "address" else 32
    value = "0x" + "ab" * max(size + change, 0)
    if column.startswith("topic"):
        topics = ["0x" + "cd" * 32] * 4
        topics[int(column[-1])] = value
        fields = {"topics": topics}
    else:
        fields = {column: value}
    assert agree(with_log(fields), hex_output) is None


@pytest.mark.parametrize(
    "text",
    [
        b'"removed":false,"removed":null',  # numpy takes it; the C parser refuses any repeat
        b'"removed":false,"note":"\x7f"',
    ],
)
def test_what_the_c_parser_refuses_the_numpy_parser_may_still_take(text):
    body = body_of([anvil_log(random.Random(15), i) for i in range(2)])
    body = body.replace(b'"removed":false', text)
    assert nativelogs.native_table(body, CHAIN, False) is None
    table = nativelogs.body_to_table(body, CHAIN, False)
    assert table is not None and table.equals(careful(body, False))


@pytest.mark.parametrize("hex_output", [False, True])
def test_a_body_cut_anywhere_inside_the_array_never_crashes(hex_output):
    body = body_of([anvil_log(random.Random(16), i) for i in range(3)])
    start, end = fastlogs._result_span(body)
    for cut in range(start, end):
        agree(body[:cut] + b"]}", hex_output)
        whole_logs = cut == start or body[cut - 1 : cut + 1] in (b"},", b"}]")
        assert (_fastlogs.parse(body, start, cut, hex_output) is None) != whole_logs


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


@pytest.mark.parametrize("hex_output", [False, True])
def test_logs_with_odd_values_and_repeated_keys_never_differ_from_the_careful_path(hex_output):
    rng = random.Random(12)
    names = ["address", "topics", "data", "blockHash", "blockNumber", "transactionHash",
             "transactionIndex", "logIndex", "removed", "blockTimestamp", "dat", "Data",
             "result"]  # fmt: skip
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


def test_parse_checks_its_arguments():
    body = body_of([])
    with pytest.raises(ValueError):
        _fastlogs.parse(body, 5, 2, False)
    with pytest.raises(ValueError):
        _fastlogs.parse(body, 0, len(body) + 1, False)
    with pytest.raises(TypeError):
        _fastlogs.parse(bytearray(body), 0, 1, False)
    # Only what nobody may change while it is parsed without the GIL: bytes, a read-only view.
    assert nativelogs.native_table(bytearray(body), CHAIN, False) is None
    assert nativelogs.native_table(memoryview(bytearray(body)), CHAIN, False) is None


def test_a_read_only_view_of_a_bigger_buffer_parses_like_its_bytes():
    body = body_of([anvil_log(random.Random(16), i) for i in range(200)])
    for hex_output in (False, True):
        buffer = bytearray(body + b"]]]garbage")  # what a reused buffer holds past the body
        view = memoryview(buffer)[: len(body)].toreadonly()
        assert nativelogs.native_table(view, CHAIN, hex_output).equals(careful(body, hex_output))
        assert fastlogs._result_span(view) == fastlogs._result_span(body)


# --- the wrapper's fallbacks ----------------------------------------------------------------


def test_without_the_extension_the_numpy_parser_reads_the_body(monkeypatch):
    body = body_of([anvil_log(random.Random(17), i) for i in range(50)])
    monkeypatch.setattr(nativelogs, "_fastlogs", None)
    assert nativelogs.native_table(body, CHAIN, False) is None
    assert nativelogs.body_to_table(body, CHAIN, False).equals(careful(body, False))
    pieces = nativelogs.body_to_table_in_pieces(body, CHAIN, False, 2_000)
    assert pieces.equals(careful(body, False))


def test_in_pieces_reads_the_whole_body_with_the_c_parser(mocker):
    body = body_of([anvil_log(random.Random(18), i) for i in range(300)])
    numpy_pieces = mocker.spy(fastlogs, "body_to_table_in_pieces")
    table = nativelogs.body_to_table_in_pieces(body, CHAIN, False, 1_000)
    assert table.equals(careful(body, False)) and numpy_pieces.call_count == 0


def test_a_body_no_parser_takes_gives_none():
    assert nativelogs.body_to_table(BAD["removed true"], CHAIN, False) is None
    assert nativelogs.body_to_table_in_pieces(BAD["not json"], CHAIN, True, 100) is None
