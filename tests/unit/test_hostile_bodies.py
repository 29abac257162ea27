"""Hostile answers through fetch_range, the way a worker reads them: whatever an endpoint sends
with HTTP 200, the result is a valid table of the task's logs or a malformed-response RpcError,
never another exception (an OverflowError once killed every worker that read one)."""

from __future__ import annotations

import random
from collections.abc import Callable

import orjson
import pyarrow as pa
import pytest

from pipeline.config.endpoints import parse_endpoints
from pipeline.config.settings import LogFilter, build_config
from pipeline.dev.simulator.hostile import MUTATIONS
from pipeline.errors import ErrorKind, NoEndpointError, RpcError
from pipeline.fetch import answers
from pipeline.fetch.answers import fetch_range
from pipeline.fetch.convert import log_schema
from pipeline.fetch.inbox import Inbox
from pipeline.fetch.rpc import RawResponse, RpcClient
from pipeline.fetch.spec import WorkerSpec
from pipeline.messages import Task
from pipeline.run import preflight

CHAIN = 31337
# Blocks 0x10-0x1f: a quantity "12" read as hex (block 18) would lie inside the task.
TASK = Task(1, 16, 31)
ENDPOINT = parse_endpoints(["hostile=http://127.0.0.1:9/key/abcdef0123456789abcdef"])[0]
KINDS = sorted(MUTATIONS)


class Answering(RpcClient):
    """A real client (its careful path is under test) whose every request gets `body`, HTTP 200."""

    def __init__(self, body: bytes = b"") -> None:
        super().__init__(ENDPOINT, 1.0)
        self.body = body

    def _post(self, body: bytes, inbox: Inbox | None = None) -> RawResponse:
        # Read into the inbox as the real client reads eth_getLogs answers: in pieces, into a
        # buffer that still holds the bytes of a longer answer before it.
        answer = self.body if inbox is None else inbox.fill(pieces(self.body, 1000))
        return RawResponse(200, {"Content-Type": "application/json"}, answer)


def pieces(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


@pytest.fixture(scope="module")
def client():
    answering = Answering()
    yield answering
    answering.close()


def spec(hex_output: bool) -> WorkerSpec:
    return WorkerSpec("hostile#0", ENDPOINT, LogFilter(), CHAIN, hex_output, 1.0, 3)


def hexstr(rng: random.Random, size: int) -> str:
    return "0x" + rng.randbytes(size).hex()


def honest_logs(rng: random.Random, count: int) -> list[dict]:
    """`count` logs of TASK's blocks, in order, as anvil writes them."""
    blocks = sorted(rng.randint(TASK.start, TASK.end) for _ in range(count))
    return [
        {
            "address": hexstr(rng, 20),
            "topics": [hexstr(rng, 32) for _ in range(rng.randint(0, 4))],
            "data": hexstr(rng, rng.choice([0, 1, 32, 64])),
            "blockHash": f"0x{block:064x}",
            "blockNumber": hex(block),
            "transactionHash": hexstr(rng, 32),
            "transactionIndex": hex(rng.randint(0, 300)),
            "logIndex": hex(i),
            "removed": False,
        }
        for i, block in enumerate(blocks)
    ]


def body_of(result: object, pretty: bool = False) -> bytes:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": result}, option=option)


def read(client: Answering, body: bytes, hex_output: bool) -> pa.Table | RpcError:
    """What fetch_range makes of `body`: its table, or the RpcError it raised (anything else
    fails the test)."""
    client.body = body
    try:
        return fetch_range(client, TASK, spec(hex_output)).table
    except RpcError as err:
        assert err.kind is ErrorKind.MALFORMED, (err, body[:300])
        assert "abcdef0123456789abcdef" not in err.message  # the key never leaks
        return err


def assert_valid(table: pa.Table, hex_output: bool) -> None:
    table.validate(full=True)
    assert table.schema == log_schema(hex_output)
    blocks = table["block_number"].to_pylist()
    assert all(TASK.start <= b <= TASK.end for b in blocks)


@pytest.mark.parametrize("hex_output", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_hostile_answer_the_simulator_serves_is_a_malformed_response(
    client, kind, hex_output
):
    for seed in range(40):
        rng = random.Random(seed)
        logs = honest_logs(rng, rng.randint(1, 12))
        for pretty in (False, True):  # the fast parser, then the careful one
            result = MUTATIONS[kind].apply([dict(log) for log in logs], random.Random(seed))
            outcome = read(client, body_of(result, pretty), hex_output)
            assert isinstance(outcome, RpcError), (kind, seed, result)


def test_the_hostile_kinds_that_need_no_log_spoil_an_empty_answer_too(client):
    for kind, mutation in MUTATIONS.items():
        if not mutation.needs_log:
            result = mutation.apply([], random.Random(1))
            assert isinstance(read(client, body_of(result), False), RpcError), kind


def _hostile_value(rng: random.Random) -> object:
    """A value an endpoint might put where a log field belongs: hostile, odd, or even right."""
    depth = rng.choice([10, 1023, 1025, 10_000])
    return rng.choice(
        [
            "0x" + "f" * rng.choice([8, 16, 17, 18, 64, 70, 1000]),
            rng.choice(["-0x1", "0x", "0xzz", "12", " 0x1", "0x_1", "+0x1", "0X1", "0x1 "]),
            rng.choice([0, -1, 2**63, 2**64 - 1, 1.5, 1e308, True, False, None]),
            orjson.Fragment(b"1" + b"0" * rng.choice([19, 20, 400, 5000])),
            orjson.Fragment(b"-" + b"9" * 30),
            orjson.Fragment(b"[" * depth + b"]" * depth),
            rng.choice([[], {}, {"a": 1}, ["0x" + "ab" * 32], [None], [[]], "x" * 100_000]),
            hexstr(rng, rng.choice([0, 1, 19, 20, 21, 31, 32, 33])),
            hexstr(rng, 32)[:-1],
        ]
    )


FIELDS = ("address", "topics", "data", "blockHash", "blockNumber", "blockTimestamp",
          "transactionHash", "transactionIndex", "logIndex", "removed", "extra")  # fmt: skip


@pytest.mark.parametrize("hex_output", [False, True])
def test_random_hostile_values_in_random_fields_give_a_valid_table_or_a_malformed_response(
    client, hex_output
):
    rng = random.Random(20)
    refused = 0
    for _ in range(1500):
        logs = honest_logs(rng, rng.randint(1, 6))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(logs))
            if not isinstance(logs[at], dict):
                continue  # already no log at all
            if rng.random() < 0.8:
                logs[at][rng.choice(FIELDS)] = _hostile_value(rng)
            elif rng.random() < 0.5:
                logs[at]["topics"] = [_hostile_value(rng)]
            else:
                logs[at] = _hostile_value(rng)
        result = logs if rng.random() < 0.9 else _hostile_value(rng)
        outcome = read(client, body_of(result, pretty=rng.random() < 0.3), hex_output)
        if isinstance(outcome, RpcError):
            refused += 1
        else:
            assert_valid(outcome, hex_output)
    assert refused > 1000  # most of them are garbage, and were refused as such


@pytest.mark.parametrize("hex_output", [False, True])
def test_random_byte_edits_give_a_valid_table_or_a_malformed_response(client, hex_output):
    rng = random.Random(21)
    alphabet = b'{}[],:"0xaAfFgG19 \n-etrunl\\'
    bodies = [body_of(honest_logs(rng, rng.randint(1, 4))) for _ in range(20)]
    for _ in range(3000):
        body = bytearray(rng.choice(bodies))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(body))
            action = rng.randrange(4)
            if action == 0:
                body[at] = rng.choice(alphabet)
            elif action == 1:
                del body[at]
            elif action == 2:
                body[at:at] = body[at : at + rng.randint(1, 40)]
            else:
                body[at:at] = rng.choice([b"[" * 2000, b"9" * 400, b'"-0x1"', b"0x" + b"f" * 40])
        outcome = read(client, bytes(body), hex_output)
        if not isinstance(outcome, RpcError):
            assert_valid(outcome, hex_output)


@pytest.mark.parametrize(
    "error", [OverflowError("too big"), RecursionError("deep"), AttributeError("x"), MemoryError()]
)
def test_any_exception_while_reading_an_answer_is_a_malformed_response(client, monkeypatch, error):
    def surprise(*args, **kwargs):
        raise error

    client.body = body_of(honest_logs(random.Random(2), 2))
    monkeypatch.setattr(answers, "check_batch", surprise)
    with pytest.raises(RpcError) as raised:
        fetch_range(client, TASK, spec(False))
    assert raised.value.kind is ErrorKind.MALFORMED
    assert type(error).__name__ in raised.value.message


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_ctrl_c_and_exits_are_never_taken_for_a_bad_answer(client, monkeypatch, error):
    client.body = body_of(honest_logs(random.Random(3), 2))

    def interrupted(*args, **kwargs):
        raise error

    monkeypatch.setattr(answers, "check_batch", interrupted)
    with pytest.raises(error):
        fetch_range(client, TASK, spec(False))


# Hostile answers to the other requests: chain id, head, block hashes, receipts, the preflight.
HOSTILE_RESULTS = [
    "0x" + "f" * 18, "0x" + "7" * 70, "-0x1", "0xzz", "12", "0x", " 0x1", 5, None, True, 1.5,
    [], {}, {"number": "0x" + "f" * 70, "hash": "0xab"}, {"hash": "0x" + "zz" * 32},
    [{"logs": 5}], [{"logs": ["x"]}], [{"logs": "0xabc"}], [7],
    orjson.Fragment(b"9" * 400), orjson.Fragment(b"[" * 10_000 + b"]" * 10_000),
]  # fmt: skip
REQUESTS: dict[str, Callable[[RpcClient], object]] = {
    "eth_chainId": RpcClient.chain_id,
    "eth_blockNumber": RpcClient.block_number,
    "the finalized block": lambda client: client.block_number("finalized"),
    "eth_getBlockByNumber": lambda client: client.block_hash(5),
    "a batch of block hashes": lambda client: client.block_hashes([5, 6]),
    "a batch of block headers": lambda client: client.block_headers([5, 6]),
    "one block header": lambda client: client.block_headers([5]),
    "eth_getBlockReceipts": lambda client: client.block_logs(5),
}


@pytest.mark.parametrize("request_name", sorted(REQUESTS))
def test_hostile_answers_to_every_other_request_are_classified_failures(request_name):
    ask = REQUESTS[request_name]
    for result in HOSTILE_RESULTS:
        client = Answering(body_of(result))
        try:
            ask(client)
        except RpcError as err:
            assert err.kind in (ErrorKind.MALFORMED, ErrorKind.BEYOND_HEAD, ErrorKind.PERMANENT)
        finally:
            client.close()


def test_a_hostile_first_answer_fails_the_probe_not_the_run(monkeypatch, tmp_path):
    monkeypatch.setattr(preflight, "PROBE_RETRY_S", 0.0)
    for result in ("0x" + "f" * 70, "-0x1", orjson.Fragment(b"[" * 10_000 + b"]" * 10_000)):
        monkeypatch.setattr(preflight, "RpcClient", lambda *args, r=result: Answering(body_of(r)))
        probe, kind = preflight._probe_once(ENDPOINT, "latest", 1.0)
        assert kind is ErrorKind.MALFORMED and probe.head is None, probe
        config = build_config(rpc=[f"hostile={ENDPOINT.url}"], output=tmp_path, env={})
        with pytest.raises(NoEndpointError, match="malformed_response"):
            preflight.resolve_plan(config)


@pytest.mark.parametrize(
    "message",
    [
        "block range too large, this block range should work: [0123, 0456]",
        "query exceeds max block range, retry with the range 0010-" + "9" * 5000,
        "exceed maximum block range: " + "9" * 1900,
    ],
)
def test_hostile_numbers_in_an_error_message_still_classify_it(message):
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32602, "message": message}}
    client = Answering(orjson.dumps(error))
    try:
        with pytest.raises(RpcError) as raised:
            client.logs_result(client.post("eth_getLogs", [{}]))
    finally:
        client.close()
    assert raised.value.kind is ErrorKind.RANGE_TOO_LARGE  # not a crash, nor a malformed answer


def test_a_batch_answered_with_its_ids_as_strings_is_read():
    # Some gateways echo the id 7 as "7": the answers are still the calls'.
    headers = [{"jsonrpc": "2.0", "id": str(i), "result": {"number": hex(b), "hash": "0x" + "ab" * 32,
                "timestamp": "0x1"}} for i, b in enumerate((5, 6))]  # fmt: skip
    client = Answering(orjson.dumps(headers[::-1]))
    try:
        found, refusal = client.block_headers([5, 6])
    finally:
        client.close()
    assert refusal is None and sorted(found) == [5, 6]
