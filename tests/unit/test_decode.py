"""ABI event decoding (pipeline.decode) against eth_abi as the oracle: every row and every type of
the decoded tables is what eth_abi's strict decoding gives for the same logs, malformed logs are
counted (never raised), and signatures and ABI files are parsed or refused in one line."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import eth_abi
import pyarrow as pa
import pytest
from eth_abi.exceptions import DecodingError

from pipeline.decode import columns
from pipeline.decode.abitypes import AbiType
from pipeline.decode.columns import decode, decode_all
from pipeline.decode.folders import folder_names
from pipeline.decode.schema import hashed, output_schema, param_columns
from pipeline.decode.signature import (
    EventSpec,
    parse_abi,
    parse_abi_entries,
    parse_signature,
    require_address_for_anonymous,
)
from pipeline.errors import ConfigError
from pipeline.fetch.convert import log_schema

ROOT = Path(__file__).resolve().parents[2]
ERC20_TRANSFER = "Transfer(address indexed from, address indexed to, uint256 value)"
ERC721_TRANSFER = "Transfer(address indexed from, address indexed to, uint256 indexed tokenId)"
TRANSFER_TOPIC0 = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
EVENTS = [
    ERC20_TRANSFER,
    ERC721_TRANSFER,
    "Approval(address indexed owner, address indexed spender, uint256 value)",
    "Swap(address indexed sender, address indexed recipient, int256 amount0, int256 amount1, "
    "uint160 sqrtPriceX96, uint128 liquidity, int24 tick)",
    "Flags(bool indexed on, bool off, bytes32 indexed key, bytes4 selector, bytes32 word, "
    "bytes1 one, bytes31 most)",
    "Ints(uint8 a, uint16 b, uint24 c, uint32 d, uint40 e, uint64 f, uint72 g, uint256 h, int8 i, "
    "int16 j, int24 k, int32 l, int48 m, int64 n, int80 o, int256 p)",
    "IndexedInts(int8 indexed small, int256 indexed big, uint64 indexed mid, uint8 tail)",
    "Message(address indexed who, string text, bytes blob, uint256 n, string more)",
    "Lists(uint8[] small, address[2] pair, uint256[3] triple, int256[] signed, bool[] flags)",
    "Static((uint256,address,bool) point, (uint8,(int16,bytes2)[2]) nested, int128[2][2] grid)",
    "Dynamic((uint256 amount,string memo)[] items, (bytes,(uint256[],address))[2] nested, "
    "string[] names, bytes[2] pair)",
    "Hashed(string indexed s, bytes indexed b, uint256[] indexed arr, uint256 x)",
    "HashedTuple((uint256,address) indexed t, address[2] indexed pair, string text)",
    "Anon(address indexed a, uint256 indexed b, bytes32 indexed c, int16 indexed d, uint256 v) "
    "anonymous",
    "Ping()",
    "OnlyTopics(address indexed a, uint256 indexed b)",
]
STRINGS = [b"", b"a", "h\u00e9llo w\u00f6rld \u2713".encode(), b"long text " * 40,
           b"\xff\xfe not utf-8", b"cut \xc3", "\U0001f600".encode() * 9]  # fmt: skip


# --- building logs -----------------------------------------------------------------------------


def random_value(kind: AbiType, rng: random.Random):
    """A value of the type that eth_abi can encode, edges often (strings as bytes)."""
    name, size = kind.kind, kind.size
    if name == "uint":
        return rng.choice(
            [0, 1, 2**size - 1, rng.getrandbits(size), rng.getrandbits(rng.randint(1, size))]
        )
    if name == "int":
        low, high = -(2 ** (size - 1)), 2 ** (size - 1) - 1
        return rng.choice([low, -1, 0, 1, high, rng.randint(low, high), -rng.getrandbits(size - 1)])
    if name == "address":
        return rng.randbytes(20)
    if name == "bool":
        return rng.random() < 0.5
    if name == "fixed_bytes":
        return rng.randbytes(size)
    if name == "bytes":
        return rng.randbytes(rng.choice([0, 1, 31, 32, 33, 64, 200]))
    if name == "string":
        return rng.choice(STRINGS)
    if name == "array":
        length = size or rng.choice([0, 0, 1, 2, 5])
        return [random_value(kind.item, rng) for _ in range(length)]
    return tuple(random_value(t, rng) for _, t in kind.fields)


def encode_log(spec: EventSpec, rng: random.Random) -> tuple[list[bytes], bytes]:
    """Topics and data of a random log of the event, encoded by eth_abi."""
    topics = [] if spec.anonymous else [bytes.fromhex(spec.topic0[2:])]
    for param in spec.indexed_params:
        if hashed(param):
            topics.append(rng.randbytes(32))  # a keccak: any 32 bytes
        else:
            value = random_value(param.type, rng)
            topics.append(eth_abi.encode([param.type.eth_abi_type()], [value]))
    kinds = [p.type for p in spec.data_params]
    values = [random_value(k, rng) for k in kinds]
    return topics, eth_abi.encode([k.eth_abi_type() for k in kinds], values)


def raw_table(logs: list[tuple[list[bytes], bytes]], hex_input: bool, timestamps: bool = False):
    """A log_schema() table (0x strings with hex_input) of (topics, data) pairs."""

    def spell(value: bytes | None):
        return value if value is None or not hex_input else "0x" + value.hex()

    rows = []
    for i, (topics, data) in enumerate(logs):
        padded = [*topics, None, None, None, None][:4]
        rows.append({
            "block_number": 100 + i // 3, "block_hash": spell(bytes([i % 256]) * 32),
            "transaction_index": i % 7, "transaction_hash": spell(i.to_bytes(32, "big")),
            "log_index": i, "address": spell(bytes([i % 5]) * 20),
            **{f"topic{k}": spell(t) for k, t in enumerate(padded)},
            "data": spell(data), "chain_id": 31337,
        })  # fmt: skip
    # The raw logs with or without block_timestamp: decoding copies it when it is there.
    table = pa.Table.from_pylist(rows, schema=log_schema(hex_input))
    table = table.drop_columns(["block_timestamp"])
    if timestamps:
        stamps = pa.array([1_700_000_000 + 12 * r["block_number"] for r in rows], pa.uint64())
        table = table.add_column(1, "block_timestamp", stamps)
    return table


# --- the oracle --------------------------------------------------------------------------------


def expected_value(kind: AbiType, value, hex_output: bool):
    """What the decoded column holds for eth_abi's value (strings read as bytes)."""
    name = kind.kind
    if name == "address":
        return value if hex_output else bytes.fromhex(value[2:])
    if name in ("bytes", "fixed_bytes"):
        return "0x" + value.hex() if hex_output else value
    if name == "string":
        return value.decode("utf-8", errors="replace")
    if name in ("uint", "int"):
        return str(value) if kind.size > 64 else value
    if name == "array":
        return [expected_value(kind.item, v, hex_output) for v in value]
    if name == "tuple":
        return {
            n: expected_value(t, v, hex_output)
            for (n, t), v in zip(kind.fields, value, strict=True)
        }
    return value


def expected_f64(kind: AbiType, value):
    if kind.kind in ("uint", "int"):
        return float(value)
    if kind.kind == "array":
        return [expected_f64(kind.item, v) for v in value]
    return {n: expected_f64(t, v) for (n, t), v in zip(kind.fields, value, strict=True) if t.wide}


def oracle(spec: EventSpec, raw: pa.Table, hex_output: bool) -> tuple[list[dict], int]:
    """The rows eth_abi (strict) decodes from the logs of the spec, and how many it refuses."""
    rows, refused = [], 0
    names = {c.param.name: c for c in param_columns(spec)}
    for log in raw.to_pylist():
        topics = [_bytes(log[f"topic{k}"]) for k in range(4)]
        present = [t for t in topics if t is not None]
        if not spec.anonymous and present[:1] != [bytes.fromhex(spec.topic0[2:])]:
            continue
        if spec.anonymous and len(present) != spec.topic_count:
            continue
        if len(present) != spec.topic_count or None in topics[: spec.topic_count]:
            refused += 1
            continue
        row = _decoded_row(
            spec, topics[1 - spec.anonymous :], _bytes(log["data"]), names, hex_output
        )
        if row is None:
            refused += 1
            continue
        meta = {k: log[k] for k in ("block_number", "transaction_index", "log_index", "chain_id")}
        for key in ("transaction_hash", "address"):
            meta[key] = "0x" + _bytes(log[key]).hex() if hex_output else _bytes(log[key])
        if "block_timestamp" in log:
            meta["block_timestamp"] = log["block_timestamp"]
        rows.append(meta | row)
    return rows, refused


def _decoded_row(spec, topics, data, names, hex_output) -> dict | None:
    row = {}
    try:
        for param, topic in zip(spec.indexed_params, topics, strict=False):
            if hashed(param):
                row[names[param.name].name] = "0x" + topic.hex() if hex_output else topic
            else:
                (value,) = eth_abi.decode([param.type.eth_abi_type()], topic)
                _put(row, names[param.name], value, hex_output)
        kinds = [p.type.eth_abi_type() for p in spec.data_params]
        for param, value in zip(spec.data_params, eth_abi.decode(kinds, data), strict=True):
            _put(row, names[param.name], value, hex_output)
    except (DecodingError, OverflowError):
        return None
    return row


def _put(row: dict, column, value, hex_output: bool) -> None:
    row[column.name] = expected_value(column.param.type, value, hex_output)
    if column.f64_name:
        row[column.f64_name] = expected_f64(column.param.type, value)


def _bytes(value):
    return bytes.fromhex(value[2:]) if isinstance(value, str) else value


def assert_matches_oracle(spec: EventSpec, raw: pa.Table, hex_output: bool) -> columns.Decoded:
    decoded = decode(raw, spec, hex_output)
    rows, refused = oracle(spec, raw, hex_output)
    has_time = "block_timestamp" in raw.column_names
    time_type = pa.uint64() if has_time else None
    assert decoded.table.schema == output_schema(spec, hex_output, time_type)
    assert decoded.table.to_pylist() == rows
    assert decoded.failures == refused
    return decoded


# --- decoding valid logs -----------------------------------------------------------------------


@pytest.mark.parametrize("hex_mode", [(False, False), (True, True), (False, True), (True, False)])
@pytest.mark.parametrize("signature", EVENTS)
def test_random_logs_decode_to_what_eth_abi_decodes(signature, hex_mode):
    hex_input, hex_output = hex_mode
    spec = parse_signature(signature)
    rng = random.Random(f"{signature}{hex_mode}")
    other = parse_signature("Other(uint256 indexed a, uint256 b)")
    logs = [encode_log(spec, rng) for _ in range(150)] + [encode_log(other, rng) for _ in range(10)]
    rng.shuffle(logs)
    decoded = assert_matches_oracle(spec, raw_table(logs, hex_input), hex_output)
    if not spec.anonymous:
        assert decoded.table.num_rows == 150
    assert decoded.failures == 0


def test_invalid_utf8_is_replaced_and_counted():
    spec = parse_signature("Note(string text)")
    logs = [([bytes.fromhex(spec.topic0[2:])], eth_abi.encode(["bytes"], [text]))
            for text in (b"fine", b"\xff bad", "\u00e9".encode(), b"cut \xc3")]  # fmt: skip
    decoded = decode(raw_table(logs, False), spec, False)
    assert decoded.table.column("text").to_pylist() == [
        "fine",
        "\ufffd bad",
        "\u00e9",
        "cut \ufffd",
    ]
    assert (decoded.invalid_utf8, decoded.failures) == (2, 0)


def test_many_batches_give_the_same_table(monkeypatch):
    rng = random.Random(5)
    cases = []
    for signature in (ERC20_TRANSFER, EVENTS[10], EVENTS[9]):
        spec = parse_signature(signature)
        raw = raw_table([encode_log(spec, rng) for _ in range(100)], False)
        cases.append((spec, raw, decode(raw, spec, False).table))
    monkeypatch.setattr(columns, "BATCH_ROWS", 7)
    for spec, raw, whole in cases:
        assert decode(raw, spec, False).table.equals(whole)


def test_a_table_of_many_chunks_decodes_like_one():
    rng = random.Random(6)
    spec = parse_signature(EVENTS[7])
    logs = [encode_log(spec, rng) for _ in range(60)]
    one = raw_table(logs, False)
    chunked = pa.concat_tables([one.slice(0, 25), one.slice(25, 10), one.slice(35)])
    assert decode(chunked, spec, False).table.equals(decode(one, spec, False).table)
    sliced = one.slice(11, 30)
    assert_matches_oracle(spec, sliced, False)


def test_block_timestamp_is_copied_when_the_raw_logs_have_it():
    rng = random.Random(7)
    spec = parse_signature(ERC20_TRANSFER)
    raw = raw_table([encode_log(spec, rng) for _ in range(5)], False, timestamps=True)
    decoded = assert_matches_oracle(spec, raw, False)
    assert decoded.table.column_names[:3] == [
        "block_number",
        "block_timestamp",
        "transaction_index",
    ]
    without = decode(raw.drop_columns(["block_timestamp"]), spec, False)
    assert "block_timestamp" not in without.table.column_names


def test_column_types_follow_the_abi_types():
    spec = parse_signature(
        "E(address a, bool b, uint8 c, int24 d, uint64 e, int64 f, uint256 g, int128 h, "
        "bytes4 i, bytes j, string k, uint16[] l, (address,uint256) m, string indexed n)"
    )
    raw = raw_table([encode_log(spec, random.Random(1))], False)
    types = {f.name: f.type for f in decode(raw, spec, False).table.schema}
    assert types["a"] == pa.binary() and types["b"] == pa.bool_()
    assert (types["c"], types["d"], types["e"], types["f"]) == (
        pa.uint8(), pa.int32(), pa.uint64(), pa.int64())  # fmt: skip
    assert (types["g"], types["g_f64"], types["h"], types["h_f64"]) == (
        pa.string(), pa.float64(), pa.string(), pa.float64())  # fmt: skip
    assert (types["i"], types["j"], types["k"]) == (pa.binary(), pa.binary(), pa.string())
    assert types["l"] == pa.list_(pa.uint16())
    assert types["m"] == pa.struct([("arg0", pa.binary()), ("arg1", pa.string())])
    assert types["m_f64"] == pa.struct([("arg1", pa.float64())])
    assert types["n"] == pa.binary()
    hex_types = {f.name: f.type for f in decode(raw, spec, True).table.schema}
    assert hex_types["a"] == hex_types["i"] == hex_types["n"] == hex_types["address"] == pa.string()


def test_extreme_integers_are_exact_decimals_and_correctly_rounded_floats():
    spec = parse_signature("Big(uint256 u, int256 s)")
    edges = [(0, 0), (2**256 - 1, -(2**255)), (2**255, -1), (2**53 + 1, 2**255 - 1),
             ((2**53 + 1) << 100, -((2**53 + 1) << 100)), (((2**54 + 3) << 150) + 1, 1),
             (10**77, -(10**76)), (2**64, -(2**64))]  # fmt: skip
    logs = [
        ([bytes.fromhex(spec.topic0[2:])], eth_abi.encode(["uint256", "int256"], v)) for v in edges
    ]
    table = decode(raw_table(logs, False), spec, False).table
    assert table.column("u").to_pylist() == [str(u) for u, _ in edges]
    assert table.column("s").to_pylist() == [str(s) for _, s in edges]
    assert table.column("u_f64").to_pylist() == [float(u) for u, _ in edges]
    assert table.column("s_f64").to_pylist() == [float(s) for _, s in edges]


def test_parameter_names_that_clash_with_metadata_columns_get_the_event_prefix():
    spec = parse_signature("Odd(address address, uint256 x, uint8 x_f64, uint64 block_number)")
    assert [c.name for c in param_columns(spec)] == [
        "event__address", "x", "event__x_f64", "event__block_number"]  # fmt: skip
    assert param_columns(spec)[1].f64_name == "x_f64"
    raw = raw_table([encode_log(spec, random.Random(2))], False)
    assert_matches_oracle(spec, raw, False)


# --- logs that do not fit ----------------------------------------------------------------------


def _mutations(data: bytes, rng: random.Random) -> list[bytes]:
    """Broken variants of an encoding: cut, one byte changed, one word replaced, bytes added."""
    variants = [
        data[: rng.randrange(len(data))] if data else b"\x00",
        data + rng.randbytes(rng.randint(1, 40)),
    ]
    if data:
        spot = rng.randrange(len(data))
        variants.append(data[:spot] + bytes([rng.randrange(256)]) + data[spot + 1 :])
        word = rng.randrange(max(1, len(data) // 32)) * 32
        garbage = rng.choice(
            [0, 1, 31, 32, len(data), len(data) - 32, 2**255, 2**64, rng.getrandbits(256)]
        )
        variants.append(data[:word] + (garbage % 2**256).to_bytes(32, "big") + data[word + 32 :])
    return variants


@pytest.mark.parametrize("signature", EVENTS)
def test_broken_logs_are_counted_as_failures_exactly_where_eth_abi_refuses_them(signature):
    spec = parse_signature(signature)
    rng = random.Random(signature)
    logs = []
    for _ in range(40):
        topics, data = encode_log(spec, rng)
        logs += [(topics, broken) for broken in _mutations(data, rng)]
        if len(topics) > 1:
            spot = rng.randrange(1 - spec.anonymous, len(topics))
            bad = list(topics)
            bad[spot] = rng.choice([rng.randbytes(32), b"\xff" * 32, b"\x00" * 31 + b"\x02"])
            logs.append((bad, data))
    raw = raw_table(logs, False)
    decoded = assert_matches_oracle(spec, raw, False)
    assert len(decoded.examples) == min(5, decoded.failures)
    assert_matches_oracle(spec, raw_table(logs, True), True)


def test_a_failure_example_says_where_the_log_is_and_why():
    spec = parse_signature(ERC20_TRANSFER)
    topic0 = bytes.fromhex(TRANSFER_TOPIC0[2:])
    who = b"\x00" * 12 + b"\x11" * 20
    logs = [([topic0, who, who], b"\x00" * 31),  # data too short
            ([topic0, who, who, who], b"\x00" * 32),  # ERC-721 layout
            ([topic0, b"\x01" * 32, who], b"\x00" * 32),  # address padding
            ([topic0, who], b"\x00" * 32),  # a topic missing
            ([topic0, who, who], b"\x00" * 32)]  # fmt: skip
    decoded = decode(raw_table(logs, False), spec, False)
    assert (decoded.table.num_rows, decoded.failures) == (1, 4)
    reasons = [e["reason"] for e in decoded.examples]
    assert reasons == ["data is shorter than 32 bytes", "4 topics, expected 3",
                       'topic1 "from" is not a canonical address', "2 topics, expected 3"]  # fmt: skip
    first = decoded.examples[0]
    assert (first["block_number"], first["log_index"]) == (100, 0)
    assert first["transaction_hash"] == "0x" + "00" * 32


def test_bad_bool_padding_fails_in_data_and_in_topics():
    spec = parse_signature("Toggle(bool indexed on, bool off)")
    topic0 = bytes.fromhex(spec.topic0[2:])
    word = [(1).to_bytes(32, "big"), (2).to_bytes(32, "big"), b"\x01" + b"\x00" * 30 + b"\x01"]
    logs = [
        ([topic0, word[0]], word[0]),
        ([topic0, word[1]], word[0]),
        ([topic0, word[0]], word[2]),
    ]
    decoded = decode(raw_table(logs, False), spec, False)
    assert decoded.table.column("off").to_pylist() == [True]
    assert decoded.failures == 2


def test_garbage_offsets_in_dynamic_data_are_failures():
    spec = parse_signature("Note(uint256 n, string text)")
    topic0 = bytes.fromhex(spec.topic0[2:])
    good = eth_abi.encode(["uint256", "string"], [5, "hi"])
    word = lambda v: v.to_bytes(32, "big")  # noqa: E731
    logs = [
        ([topic0], good[:32] + word(offset) + good[64:]) for offset in (0, 32, 2**255, 4096, 63)
    ]
    logs += [([topic0], good[:64] + word(2**200) + good[96:]), ([topic0], good[:-1])]
    raw = raw_table(logs, False)
    decoded = assert_matches_oracle(spec, raw, False)
    assert (decoded.table.num_rows, decoded.failures) == (0, 7)


def test_nothing_raises_on_random_bytes():
    rng = random.Random(3)
    for signature in EVENTS:
        spec = parse_signature(signature)
        topics = [] if spec.anonymous else [bytes.fromhex(spec.topic0[2:])]
        logs = [(topics + [rng.randbytes(32) for _ in range(spec.topic_count - len(topics))],
                 rng.randbytes(rng.randrange(0, 300))) for _ in range(30)]  # fmt: skip
        assert_matches_oracle(spec, raw_table(logs, False), False)


def test_erc20_and_erc721_transfers_split_the_logs_by_topic_count():
    erc20, erc721 = parse_signature(ERC20_TRANSFER), parse_signature(ERC721_TRANSFER)
    assert erc20.topic0 == erc721.topic0 == TRANSFER_TOPIC0
    rng = random.Random(4)
    topic0 = bytes.fromhex(TRANSFER_TOPIC0[2:])
    logs = [encode_log(erc20, rng) for _ in range(6)] + [encode_log(erc721, rng) for _ in range(4)]
    logs.append(([topic0], b""))  # neither: one topic
    raw = raw_table(logs, False)
    both = decode_all(raw, [erc721, erc20], False)
    assert (both[erc20].table.num_rows, both[erc721].table.num_rows) == (6, 4)
    assert (both[erc20].failures, both[erc721].failures) == (1, 0)  # the first by topic count
    alone = decode(raw, erc20, False)
    assert (alone.table.num_rows, alone.failures) == (6, 5)
    assert both[erc20].table.equals(alone.table)


def test_anonymous_events_are_matched_by_topic_count_alone():
    spec = parse_signature("Anon(address indexed a, uint256 v) anonymous")
    assert spec.anonymous and spec.topic_count == 1
    rng = random.Random(8)
    logs = [encode_log(spec, rng) for _ in range(3)]
    logs.append(([rng.randbytes(32), rng.randbytes(32)], b"\x00" * 32))  # two topics: not it
    decoded = assert_matches_oracle(spec, raw_table(logs, False), False)
    assert (decoded.table.num_rows, decoded.failures) == (3, 0)
    with pytest.raises(ConfigError, match="anonymous"):
        require_address_for_anonymous([spec], address_given=False)
    require_address_for_anonymous([spec], address_given=True)


def test_empty_and_unmatched_tables_give_empty_tables_of_the_right_schema():
    spec = parse_signature(EVENTS[10])
    for raw in (raw_table([], False), raw_table([([b"\x01" * 32], b"")], False)):
        decoded = decode(raw, spec, False)
        assert decoded.table.num_rows == 0 and decoded.failures == 0
        assert decoded.table.schema == output_schema(spec, False)


# --- signatures and ABI files ------------------------------------------------------------------


def test_signature_spellings_give_the_same_canonical_spec():
    spec = parse_signature(ERC20_TRANSFER)
    assert (spec.name, spec.signature, spec.topic0) == (
        "Transfer",
        "Transfer(address,address,uint256)",
        TRANSFER_TOPIC0,
    )
    assert [(p.name, p.abi_type, p.indexed) for p in spec.params] == [
        ("from", "address", True), ("to", "address", True), ("value", "uint256", False)]  # fmt: skip
    for text in ("event Transfer(address indexed from,address indexed to,uint256 value);",
                 "  event  Transfer (\n address  indexed from ,\taddress indexed to , uint value ) "):  # fmt: skip
        assert parse_signature(text) == spec


def test_unnamed_parameters_and_tuples_get_positional_names():
    spec = parse_signature("Trade(address indexed, (uint256,address payable)[] legs, uint8)")
    assert spec.signature == "Trade(address,(uint256,address)[],uint8)"
    assert [p.name for p in spec.params] == ["arg0", "legs", "arg2"]
    legs = spec.params[1]
    assert (legs.abi_type, [c.name for c in legs.components]) == (
        "(uint256,address)[]",
        ["arg0", "arg1"],
    )
    named = parse_signature("T(tuple(uint256 amount, (bool ok) inner)[2] x)")
    assert named.signature == "T((uint256,(bool))[2])"
    assert named.params[0].components[1].components[0].name == "ok"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Transfer(address from", '--event "Transfer(address from": missing ")"'),
        ("Transfer(uint257 x)", '--event "Transfer(uint257 x)": unknown type "uint257"'),
        ("T(uint7 x)", 'unknown type "uint7"'),
        ("T(bytes33 x)", 'unknown type "bytes33"'),
        ("T(bytes0 x)", 'unknown type "bytes0"'),
        ("T(fixed128x18 x)", 'unsupported type "fixed128x18"'),
        ("T(ufixed x)", 'unsupported type "ufixed"'),
        ("T(uint256 a, bool a)", 'duplicate parameter name "a"'),
        (
            "T(uint8 indexed a, uint8 indexed b, uint8 indexed c, uint8 indexed d)",
            "4 indexed parameters",
        ),
        (
            "T(uint8 indexed a, uint8 indexed b, uint8 indexed c, uint8 indexed d, uint8 indexed e) anonymous",
            "5 indexed parameters: an anonymous event has at most 4",
        ),
        ("T(uint256[0] a)", 'bad array size "[0]"'),
        ("T(uint256[2 a)", 'missing "]"'),
        ("T(() a)", "empty tuple"),
        ("T((uint256 x, bool x) a)", 'duplicate tuple component name "x"'),
        ("T(uint256 a) extra", 'unexpected "extra" after ")"'),
        ("T uint256 a", 'missing "(" after "T"'),
        ("(uint256 a)", "expected an event name"),
        ("T(uint256 a b)", 'unexpected "b" after parameter "a"'),
        ("T(, uint256 a)", 'expected a type, found ","'),
        ("T(\nuint256 a,\n", 'missing ")"'),
    ],
)
def test_malformed_signatures_are_one_line_config_errors(text, message):
    with pytest.raises(ConfigError) as caught:
        parse_signature(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_abi_file_gives_every_event_with_named_tuple_components(tmp_path):
    abi = [
        {"type": "function", "name": "transfer", "inputs": []},
        {"type": "event", "name": "Transfer", "anonymous": False, "inputs": [
            {"name": "from", "type": "address", "indexed": True},
            {"name": "to", "type": "address", "indexed": True},
            {"name": "value", "type": "uint256", "indexed": False}]},
        {"type": "event", "name": "Order", "inputs": [
            {"name": "", "type": "tuple[]", "indexed": False, "components": [
                {"name": "maker", "type": "address"},
                {"name": "legs", "type": "tuple[2]", "components": [
                    {"name": "amount", "type": "uint256"}, {"name": "", "type": "bytes"}]}]}]},
        {"type": "event", "name": "Secret", "anonymous": True, "inputs": [
            {"name": "x", "type": "uint256", "indexed": True}]},
    ]  # fmt: skip
    path = tmp_path / "abi.json"
    path.write_text(json.dumps(abi))
    transfer, order, secret = parse_abi(path)
    assert transfer == parse_signature(ERC20_TRANSFER)
    assert order.signature == "Order((address,(uint256,bytes)[2])[])"
    param = order.params[0]
    assert param.name == "arg0"
    assert param.type.item.fields[1][1].item.fields[1][0] == "arg1"
    assert [c.name for c in param.components[1].components] == ["amount", "arg1"]
    assert secret.anonymous and secret.topic_count == 1
    path.write_text(json.dumps({"abi": abi}))  # a Hardhat/Foundry artifact
    assert parse_abi(path) == [transfer, order, secret]
    rng = random.Random(9)
    assert_matches_oracle(
        order, raw_table([encode_log(order, rng) for _ in range(20)], False), False
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not valid JSON"),
        ('{"a": 1}', "not a JSON list of ABI entries"),
        ("[1, 2]", "not a JSON list of ABI entries"),
        ('[{"type": "function", "name": "f"}]', "has no events"),
        (
            '[{"type": "event", "name": "E", "inputs": [{"name": "x", "type": "uint257"}]}]',
            'event "E": unknown type "uint257"',
        ),
        (
            '[{"type": "event", "name": "E", "inputs": [{"name": "x", "type": "tuple"}]}]',
            'event "E": components of a tuple is not a list of objects',
        ),
        ('[{"type": "event", "inputs": []}]', 'an event entry has no "name"'),
        (
            '[{"type": "event", "name": "E", "inputs": [{"name": "a b", "type": "bool"}]}]',
            'bad parameter name "a b"',
        ),
    ],
)
def test_malformed_abi_files_are_one_line_config_errors(tmp_path, content, message):
    path = tmp_path / "abi.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        parse_abi(path)
    assert str(caught.value).startswith(f"--abi {path}")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_abi_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        parse_abi(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="no events"):
        parse_abi_entries([], "--abi x")


# --- folder names ------------------------------------------------------------------------------


def test_erc20_and_erc721_transfer_get_distinct_stable_folders():
    erc20, erc721 = parse_signature(ERC20_TRANSFER), parse_signature(ERC721_TRANSFER)
    approval = parse_signature(EVENTS[2])
    expected = {erc20: "Transfer", erc721: "Transfer__4_topics", approval: "Approval"}
    assert folder_names([erc20, erc721, approval]) == expected
    assert folder_names([approval, erc721, erc20]) == expected
    assert folder_names([erc721]) == {erc721: "Transfer"}


def test_same_name_and_topic_count_get_a_hash_and_case_is_not_enough():
    a = parse_signature("Deposit(address indexed who, uint256 amount)")
    b = parse_signature("Deposit(address indexed who, uint128 amount)")
    c = parse_signature("deposit(uint256 x)")
    d = parse_signature("Deposit(uint256 indexed a, uint256 indexed b)")
    names = folder_names([d, c, b, a])
    assert len({n.casefold() for n in names.values()}) == 4
    assert names[d] == "Deposit__3_topics"
    assert names == folder_names([a, b, c, d])
    assert all(n.replace("_", "").isalnum() for n in names.values())
    dollar = parse_signature("Pay$(uint256 x)")
    assert folder_names([dollar]) == {dollar: "Pay_"}


def test_decoding_static_events_loads_neither_eth_abi_nor_the_rest_of_the_tool():
    code = (
        "import sys\n"
        "import pyarrow as pa\n"
        "from pipeline.decode.columns import decode\n"
        "from pipeline.decode.folders import folder_names\n"
        "from pipeline.decode.signature import parse_signature\n"
        "from pipeline.fetch.convert import log_schema\n"
        "spec = parse_signature('Transfer(address indexed a, address indexed b, uint256 c)')\n"
        "folder_names([spec])\n"
        "log = dict.fromkeys(log_schema().names, bytes(32)) | {'block_number': 1,\n"
        "    'block_timestamp': 1_700_000_000,\n"
        "    'transaction_index': 0, 'log_index': 0, 'chain_id': 1, 'topic3': None,\n"
        "    'topic0': bytes.fromhex(spec.topic0[2:])}\n"
        "table = pa.Table.from_pylist([log], schema=log_schema())\n"
        "assert decode(table, spec, False).table.num_rows == 1\n"
        "bad = ('eth_utils', 'web3', 'eth_abi', 'pipeline.dev', 'pipeline.run', 'pipeline.store',\n"
        "       'pipeline.cli')\n"
        "print(sorted(m for m in sys.modules if m.startswith(bad)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
