"""BlockTimestamps (fetch/timestamps.py): which blocks get their header asked, in what batches, and
what is trusted of an endpoint's blockTimestamp; RpcClient.block_headers reads every answer."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pyarrow as pa
import pytest
from test_hostile_bodies import HOSTILE_RESULTS

from pipeline.config.endpoints import parse_endpoints
from pipeline.config.settings import build_config
from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch import timestamps as timestamps_module
from pipeline.fetch.convert import logs_to_table
from pipeline.fetch.rpc import BlockHeader, RawResponse, RpcClient
from pipeline.fetch.timestamps import (
    BATCH_GROW_AFTER,
    CHECK_EVERY,
    BlockTimestamps,
    HeaderBatches,
)
from pipeline.fetch.worker import EndpointWorker, WorkerSpec
from pipeline.messages import Attempt, Reaction, Task
from pipeline.store.files import read_fragment
from pipeline.store.layout import INCOMING_DIR

ENDPOINT = parse_endpoints(["node=http://127.0.0.1:9"])[0]
TASK = Task(1, 100, 199)
BASE = 1_700_000_000


def block_hash(block: int) -> str:
    return f"0x{block:064x}"


def stamp(block: int) -> int:
    return BASE + 12 * block


def table_of(blocks: list[int], timestamps: dict[int, object] | None = None, hex_output=False):
    """A parsed answer with one log per entry of `blocks`; blockTimestamp as `timestamps` says
    (by block; missing: no field), else each block's true one."""
    given = [hex(stamp(b)) if timestamps is None else timestamps.get(b) for b in blocks]
    return logs_table(list(zip(blocks, given, strict=True)), hex_output)


def logs_table(rows: list[tuple[int, object]], hex_output: bool = False) -> pa.Table:
    """A parsed answer of one log per (block, blockTimestamp) row; None: no such field."""
    logs = []
    for i, (block, given) in enumerate(rows):
        log = {
            "address": "0x" + "11" * 20,
            "topics": [],
            "data": "0x",
            "blockHash": block_hash(block),
            "blockNumber": hex(block),
            "transactionHash": f"0x{i:064x}",
            "transactionIndex": "0x0",
            "logIndex": hex(i),
        }
        if given is not None:
            log["blockTimestamp"] = given if isinstance(given, str) else hex(given)
        logs.append(log)
    return logs_to_table(logs, 1, hex_output)


class Node:
    """block_headers() as an endpoint answers it: at most `batch_limit` calls a request (None:
    any; 0: no batch), optionally a throttle on some calls; every request is kept."""

    def __init__(self, batch_limit: int | None = None, throttled: set[int] = frozenset()) -> None:
        self.batch_limit = batch_limit
        self.throttled = set(throttled)
        self.requests: list[list[int]] = []
        self.last_latency_ms = 1.0

    def block_headers(self, blocks: list[int]):
        self.requests.append(list(blocks))
        if len(blocks) > 1 and self.batch_limit is not None and len(blocks) > self.batch_limit:
            raise RpcError(ErrorKind.PERMANENT, "code -32600: batch requests are not supported")
        found = {b: BlockHeader(block_hash(b), stamp(b)) for b in blocks if b not in self.throttled}
        if len(found) < len(blocks):
            return found, RpcError(ErrorKind.RATE_LIMITED, "request rate exceeded")
        return found, None

    def asked(self) -> list[int]:
        return sorted(b for request in self.requests for b in request)


class Recorded:
    """The worker's _record and notices, kept."""

    def __init__(self) -> None:
        self.attempts: list[tuple[bool, ErrorKind | None, Reaction | None]] = []
        self.notices: list[str] = []

    def record(self, ok, client, task, err=None, reaction=None) -> None:
        self.attempts.append((ok, err.kind if err else None, reaction))


def stamps(batches: HeaderBatches | None = None) -> tuple[BlockTimestamps, Recorded]:
    seen = Recorded()
    filler = BlockTimestamps("node", lambda calls: None, seen.record, seen.notices.append, batches)
    return filler, seen


def seconds(table: pa.Table) -> list[int]:
    return table["block_timestamp"].cast(pa.int64()).to_pylist()


def truth(table: pa.Table) -> list[int]:
    return [stamp(b) for b in table["block_number"].to_pylist()]


# --- whose timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize("hex_output", [False, True])
def test_without_block_timestamps_each_block_with_logs_gets_its_header_once(hex_output):
    blocks = [100, 100, 103, 150, 150, 150, 199]
    table = table_of(blocks, timestamps={}, hex_output=hex_output)
    node = Node()
    filler, seen = stamps()
    filled = filler.fill(node, TASK, table).table
    assert seconds(filled) == truth(table) and filled["block_timestamp"].null_count == 0
    assert filled.schema == table.schema
    assert node.requests == [[100, 103, 150, 199]]  # one batch, blocks without logs left out
    assert seen.attempts == [(True, None, None)]
    filler.fill(node, TASK, table)  # the same blocks again: known already
    assert len(node.requests) == 1


def test_an_honest_endpoint_is_checked_at_its_first_answer_then_once_in_fifty():
    node = Node()
    filler, seen = stamps()
    table = table_of([100, 101, 150])
    assert seconds(filler.fill(node, TASK, table).table) == truth(table)
    assert node.requests == [[150]]  # the last block of the answer
    for i in range(1, 3 * CHECK_EVERY + 1):
        blocks = [200 + 3 * i, 201 + 3 * i]
        assert seconds(filler.fill(node, TASK, table_of(blocks)).table) == [
            stamp(b) for b in blocks
        ]
    assert len(node.requests) == 1 + 3  # the 50th, 100th and 150th answer after the first
    assert seen.notices == [] and filler.trusted


def test_an_answer_without_logs_asks_nothing():
    node = Node()
    filler, _ = stamps()
    empty = table_of([])
    assert filler.fill(node, TASK, empty).table.equals(empty) and node.requests == []


def test_logs_with_zero_or_no_timestamp_take_their_blocks_header_only():
    node = Node()
    filler, _ = stamps()
    filler.checked = True  # no check due in this answer
    table = table_of([100, 101, 101, 102, 103], timestamps={100: stamp(100), 101: "0x0"})
    filled = filler.fill(node, TASK, table).table
    assert seconds(filled) == truth(table)
    assert node.requests == [[101, 102, 103]] and filler.trusted


def test_an_hour_late_everywhere_is_caught_by_the_check_and_never_believed_again():
    node = Node()
    filler, seen = stamps()
    late = {b: stamp(b) + 3600 for b in range(100, 200)}
    table = table_of([100, 120, 140], timestamps=late)
    filled = filler.fill(node, TASK, table).table
    assert seconds(filled) == truth(table)  # this answer too: replaced from the headers
    assert not filler.trusted and len(seen.notices) == 1
    assert "node: blockTimestamp disagrees" in seen.notices[0]
    assert node.requests == [[140], [100, 120]]
    table = table_of([160, 180], timestamps=late)
    assert seconds(filler.fill(node, TASK, table).table) == truth(table)
    assert node.asked() == [100, 120, 140, 160, 180] and len(seen.notices) == 1


@pytest.mark.parametrize(
    "rows",
    [
        [(100, stamp(100)), (110, stamp(110)), (110, stamp(110) + 1), (120, stamp(120))],
        [(100, stamp(120)), (110, stamp(110)), (120, stamp(120))],  # block 100 after block 110
    ],
    ids=["two in one block", "decreasing"],
)
def test_timestamps_that_contradict_each_other_are_caught_without_a_header(rows):
    node = Node()
    filler, seen = stamps()
    filler.checked = True  # no check due in this answer
    table = logs_table(rows)
    assert seconds(filler.fill(node, TASK, table).table) == truth(table)
    assert not filler.trusted and len(seen.notices) == 1
    assert node.requests == [[100, 110, 120]]


def test_a_header_already_known_checks_the_answer_for_free():
    node = Node()
    filler, _ = stamps()
    filler.fill(node, TASK, table_of([100, 101], timestamps={}))  # headers of 100 and 101 known
    filler.checked = True
    table = table_of([101, 102], timestamps={101: stamp(101) + 5, 102: stamp(102) + 5})
    assert seconds(filler.fill(node, TASK, table).table) == truth(table)
    assert not filler.trusted and node.requests == [[100, 101], [102]]


def test_a_header_of_another_block_hash_is_a_malformed_answer(monkeypatch):
    node = Node()
    filler, _ = stamps()
    table = table_of([100, 101], timestamps={})
    monkeypatch.setattr(
        node,
        "block_headers",
        lambda blocks: ({b: BlockHeader("0x" + "ee" * 32, 1) for b in blocks}, None),
    )
    with pytest.raises(RpcError) as raised:
        filler.fill(node, TASK, table)
    assert raised.value.kind is ErrorKind.MALFORMED and "blockHash" in raised.value.message


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(timestamps_module, "CACHE_HEADERS", 3)
    node = Node()
    filler, _ = stamps()
    filler.fill(node, TASK, table_of([100, 101, 102, 103], timestamps={}))
    filler.fill(node, TASK, table_of([100, 103], timestamps={}))
    assert node.requests == [[100, 101, 102, 103], [100]]  # 100 had left the cache


# --- batches -------------------------------------------------------------------------------------


def test_refused_batches_shrink_to_single_requests_and_every_request_is_counted():
    node = Node(batch_limit=0)
    filler, seen = stamps()
    blocks = list(range(100, 200))
    table = filler.fill(node, TASK, table_of(blocks, timestamps={})).table
    assert seconds(table) == truth(table)
    sizes = [len(r) for r in node.requests]
    assert sizes[:5] == [50, 25, 12, 6, 3] and set(sizes[5:]) == {1, 2}
    refused = [a for a in seen.attempts if not a[0]]
    assert (
        refused
        == [(False, ErrorKind.PERMANENT, Reaction.SPLIT)] * sizes.count(2)
        + [(False, ErrorKind.PERMANENT, Reaction.SPLIT)] * 5
    )
    assert len(seen.attempts) == len(node.requests)
    assert filler.batches.size == filler.batches.ceiling == 1


def test_a_batch_limit_of_two_is_found_and_kept():
    node = Node(batch_limit=2)
    filler, _ = stamps()
    filler.fill(node, TASK, table_of(list(range(100, 200)), timestamps={}))
    assert filler.batches.size == filler.batches.ceiling == 2
    assert [len(r) for r in node.requests[-5:]] == [2] * 5


def test_batches_grow_back_after_a_run_of_whole_ones_up_to_what_was_refused():
    batches = HeaderBatches()
    batches.refused(50, certain=False)  # a server error: no ceiling
    assert (batches.size, batches.ceiling) == (25, 50)
    for _ in range(BATCH_GROW_AFTER):
        batches.answered(25)
    assert batches.size == 50
    batches.refused(50)
    batches.refused(25)
    assert (batches.size, batches.ceiling) == (12, 24)
    for _ in range(3 * BATCH_GROW_AFTER):
        batches.answered(batches.size)
    assert batches.size == 24
    batches.partial(7)
    assert batches.size == batches.ceiling == 7


def test_a_throttled_call_fails_the_request_but_keeps_what_it_brought():
    node = Node(throttled={150})
    filler, _ = stamps()
    table = table_of([100, 150, 199], timestamps={})
    with pytest.raises(RpcError) as raised:
        filler.fill(node, TASK, table)
    assert raised.value.kind is ErrorKind.RATE_LIMITED
    node.throttled.clear()
    assert seconds(filler.fill(node, TASK, table).table) == truth(table)
    assert node.requests == [[100, 150, 199], [150]]


# --- RpcClient.block_headers: what an endpoint may answer ---------------------------------------


class Answering(RpcClient):
    """A real client whose every request gets `body` with `status`."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        super().__init__(ENDPOINT, 1.0)
        self.body, self.status = body, status
        self.sent: list[bytes] = []

    def _post(self, body: bytes, inbox: object = None) -> RawResponse:
        self.sent.append(body)
        return RawResponse(self.status, {}, self.body)


def header_answer(block: int, id_: int, **changes) -> dict:
    result = {"number": hex(block), "hash": block_hash(block), "timestamp": hex(stamp(block))}
    return {"jsonrpc": "2.0", "id": id_, "result": {**result, **changes}}


def test_a_batch_answered_in_any_order_gives_every_header():
    answers = [header_answer(7, 1), header_answer(5, 0), header_answer(9, 2)]
    random.Random(1).shuffle(answers)
    client = Answering(orjson.dumps(answers))
    found, refusal = client.block_headers([5, 7, 9])
    assert refusal is None
    assert found == {b: BlockHeader(block_hash(b), stamp(b)) for b in (5, 7, 9)}
    assert len(orjson.loads(client.sent[0])) == 3


def test_one_block_is_asked_in_a_plain_request():
    client = Answering(orjson.dumps(header_answer(5, 1)))
    assert client.block_headers([5]) == ({5: BlockHeader(block_hash(5), stamp(5))}, None)
    assert isinstance(orjson.loads(client.sent[0]), dict)


def test_calls_a_batch_left_unanswered_come_back_with_the_most_urgent_error():
    throttle = {"jsonrpc": "2.0", "id": 2, "error": {"code": -32005, "message": "rate exceeded"}}
    odd = header_answer(9, 1, number="0x8")  # the header of another block
    client = Answering(orjson.dumps([header_answer(5, 0), odd, throttle]))
    found, refusal = client.block_headers([5, 9, 11])
    assert list(found) == [5] and refusal.kind is ErrorKind.RATE_LIMITED


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"no batch"}}', 200,
         ErrorKind.PERMANENT),
        (b"Too Many Requests", 429, ErrorKind.RATE_LIMITED),
        (b"<html>413</html>", 413, ErrorKind.RESPONSE_TOO_BIG),
        (b'{"jsonrpc":"2.0","id":0,"result":{"hash":"0x12"}}', 200, ErrorKind.MALFORMED),
        (b"[]", 200, ErrorKind.MALFORMED),
        (b"[" * 10_000 + b"]" * 10_000, 200, ErrorKind.MALFORMED),
    ],
)  # fmt: skip
def test_a_batch_refused_as_a_whole_raises_its_error(body, status, kind):
    with pytest.raises(RpcError) as raised:
        Answering(body, status).block_headers([5, 6])
    assert raised.value.kind is kind


@pytest.mark.parametrize(
    ("result", "kind"),
    [
        (None, ErrorKind.BEYOND_HEAD),
        ({"number": "0x5", "hash": "0x12", "timestamp": "0x1"}, ErrorKind.MALFORMED),
        ({"number": "0x6", "hash": block_hash(5), "timestamp": "0x1"}, ErrorKind.MALFORMED),
        ({"number": "0x5", "hash": block_hash(5), "timestamp": "0x" + "f" * 16},
         ErrorKind.MALFORMED),
        ({"number": "0x5", "hash": block_hash(5), "timestamp": 5}, ErrorKind.MALFORMED),
        ({"number": "0x5", "hash": block_hash(5)}, ErrorKind.MALFORMED),
    ],
)  # fmt: skip
def test_a_header_that_is_not_the_blocks_is_refused(result, kind):
    single = {"jsonrpc": "2.0", "id": 1, "result": result}
    with pytest.raises(RpcError) as raised:
        Answering(orjson.dumps(single)).block_headers([5])
    assert raised.value.kind is kind
    found, refusal = Answering(
        orjson.dumps([{**single, "id": 0}, header_answer(6, 1)])
    ).block_headers([5, 6])
    assert list(found) == [6] and refusal.kind is kind


# --- the worker: filled before delivery, and a failed header request is the task's -------------


def worker_and_client(mocker, tmp_path, logs: pa.Table, verify: bool = False):
    """An EndpointWorker on mocked queues, and a client whose eth_getLogs answer is `logs`."""
    config = build_config(rpc=["a=http://127.0.0.1:9"], output=tmp_path, env={})
    spec = WorkerSpec("a#0", config.endpoints[0], config.log_filter, 1, False, 1.0, 3,
                      output=tmp_path, to_block=TASK.end, head=TASK.end,
                      verify=verify)  # fmt: skip
    (tmp_path / INCOMING_DIR).mkdir(parents=True)
    board, results, events = mocker.Mock(), mocker.Mock(), mocker.Mock()
    worker = EndpointWorker(spec, board, results, events)
    client = RpcClient(config.endpoints[0], 1.0)
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": _as_json(logs)})
    mocker.patch.object(client, "post", return_value=RawResponse(200, {}, body))
    return worker, client


def _as_json(table: pa.Table) -> list[dict]:
    """The logs of a table_of() table as an endpoint sends them, without blockTimestamp."""
    return [
        {"address": "0x" + row["address"].hex(), "topics": [], "data": "0x",
         "blockHash": "0x" + row["block_hash"].hex(), "blockNumber": hex(row["block_number"]),
         "transactionHash": "0x" + row["transaction_hash"].hex(),
         "transactionIndex": hex(row["transaction_index"]), "logIndex": hex(row["log_index"])}
        for row in table.to_pylist()
    ]  # fmt: skip


def attempts_of(events) -> list[tuple[bool, Reaction | None]]:
    sent = [c.args[0] for c in events.put.call_args_list if isinstance(c.args[0], Attempt)]
    return [(a.ok, a.reaction) for a in sent]


def test_the_worker_delivers_logs_with_their_headers_timestamps(mocker, tmp_path):
    logs = table_of([100, 120, 120, 199], timestamps={})
    worker, client = worker_and_client(mocker, tmp_path, logs)
    mocker.patch.object(client, "block_headers", side_effect=Node().block_headers)
    worker.fetch(client, TASK)
    (batch,) = [c.args[0] for c in worker.results.put.call_args_list]
    assert seconds(read_fragment(Path(batch.path))) == truth(logs)
    assert attempts_of(worker.events) == [(True, None), (True, None)]  # eth_getLogs, headers


def test_near_the_head_a_node_without_block_receipts_is_asked_for_them_once(mocker, tmp_path):
    # hardhat and ganache have no eth_getBlockReceipts: every empty block near the head whose
    # bloom may match would ask again, and be refused again.
    worker, client = worker_and_client(mocker, tmp_path, table_of([100]), verify=True)
    full = b"\xff" * 256  # a bloom that may match any filter
    headers = lambda blocks: ({b: BlockHeader(block_hash(b), stamp(b), full) for b in blocks}, None)  # noqa: E731
    mocker.patch.object(client, "block_headers", side_effect=headers)
    missing = RpcError(ErrorKind.PERMANENT, "code -32601: method eth_getBlockReceipts not found")
    asked = mocker.patch.object(client, "block_logs", side_effect=missing)
    worker.fetch(client, TASK)
    worker.fetch(client, TASK)
    assert asked.call_count == 1
    assert len(worker.results.put.call_args_list) == 2  # both answers are believed


def test_a_failed_header_request_retries_the_task_and_never_splits_it(mocker, tmp_path):
    worker, client = worker_and_client(mocker, tmp_path, table_of([100, 150], timestamps={}))
    worker.timestamps.batches = HeaderBatches(1)
    too_big = RpcError(ErrorKind.RESPONSE_TOO_BIG, "response too big")
    mocker.patch.object(client, "block_headers", side_effect=too_big)
    worker.fetch(client, TASK)
    worker.board.split.assert_not_called()
    (retried,) = [c.args[0] for c in worker.board.retry.call_args_list]
    assert retried.attempts == 1 and "response too big" in retried.last_error
    worker.results.put.assert_not_called()
    assert attempts_of(worker.events) == [(True, None), (False, Reaction.RETRY)]


def test_hostile_headers_in_a_batch_are_refused_calls_never_exceptions():
    for result in HOSTILE_RESULTS:
        items = [{"jsonrpc": "2.0", "id": 0, "result": result}, header_answer(6, 1)]
        for body in (orjson.dumps(items), orjson.dumps([result, result])):
            try:
                found, refusal = Answering(body).block_headers([5, 6])
            except RpcError as err:
                assert err.kind in (ErrorKind.MALFORMED, ErrorKind.BEYOND_HEAD), err
            else:
                assert set(found) <= {6} and refusal is not None
