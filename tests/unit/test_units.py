"""Unit tests of single functions: planning, backoff, config precedence, redaction, conversion."""

from __future__ import annotations

import io
import itertools
import random

import pyarrow as pa
import pytest
import requests
import urllib3
from conftest import get_logs, plan_tasks

from pipeline.config.endpoints import parse_endpoints, redact_url, scrub, short_name
from pipeline.config.settings import DEFAULT_RPC_URLS, LogFilter, build_config
from pipeline.errors import ConfigError, ErrorKind, NoEndpointError, RpcError
from pipeline.fetch.convert import log_schema, logs_to_table
from pipeline.fetch.ratecontrol import Backoff
from pipeline.fetch.validate import check_batch, check_not_removed
from pipeline.messages import Task
from pipeline.plan.board import TaskBoard
from pipeline.plan.chunks import ChunkPlan, Coverage, gaps, merge_ranges

ADDR = "0x" + "ab" * 20
TOPIC = "0x" + "11" * 32


# --- task planning -------------------------------------------------------------------------


def test_plan_covers_range_exactly_with_aligned_boundaries():
    tasks = plan_tasks(1234, 5678, 1000)
    assert [(t.start, t.end) for t in tasks] == [
        (1234, 1999),
        (2000, 2999),
        (3000, 3999),
        (4000, 4999),
        (5000, 5678),
    ]
    assert [t.task_id for t in tasks] == list(range(5))


@pytest.mark.parametrize("start,end,chunk", [(0, 0, 1), (0, 999, 1000), (5, 5, 1000), (7, 1000, 3)])
def test_plan_has_no_gap_or_overlap(start, end, chunk):
    tasks = plan_tasks(start, end, chunk)
    assert tasks[0].start == start and tasks[-1].end == end
    assert all(a.end + 1 == b.start for a, b in itertools.pairwise(tasks))
    assert all(t.blocks <= chunk for t in tasks)


def test_a_huge_range_is_planned_lazily():
    plan = ChunkPlan(0, 10**12, 1)
    assert plan.remaining() == 10**12 + 1
    first = plan.take()
    assert (first.start, first.end) == (0, 0) and plan.remaining() == 10**12
    assert [(t.start, t.end) for t in plan.rest()] == [(1, 10**12)]


def test_gaps_are_the_uncovered_parts():
    assert gaps(0, 99, [(10, 19), (15, 29), (90, 120)]) == [(0, 9), (30, 89)]
    assert gaps(5, 9, []) == [(5, 9)] and gaps(5, 9, [(0, 100)]) == []


def test_coverage_merges_ranges_as_they_arrive():
    coverage = Coverage()
    for lo, hi in [(10, 19), (30, 39), (20, 29), (0, 9), (50, 59)]:
        coverage.add(lo, hi)
    assert coverage.ranges() == [(0, 39), (50, 59)] and coverage.blocks == 50


def test_coverage_forgets_a_dropped_range_and_takes_it_again():
    coverage = Coverage()
    for lo, hi in [(0, 59), (60, 119), (120, 179)]:
        coverage.add(lo, hi)
    coverage.remove(60, 119)  # a distrusted endpoint's answer, fetched again
    assert coverage.ranges() == [(0, 59), (120, 179)]
    coverage.add(60, 119)
    assert coverage.ranges() == [(0, 179)] and coverage.blocks == 180


def test_merge_ranges_joins_touching_ranges():
    assert merge_ranges([(10, 19), (0, 9), (30, 39), (35, 40)]) == [(0, 19), (30, 40)]


# --- backoff ---------------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_up_to_thirty_with_jitter():
    backoff = Backoff(rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    for delay, nominal in zip(delays, [1, 2, 4, 8, 16, 30, 30, 30], strict=True):
        assert nominal * 0.8 <= delay <= min(30, nominal * 1.2)
    assert len(set(delays)) > 1


def test_backoff_resets_after_success():
    backoff = Backoff(rng=random.Random(2))
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 1.2


def test_backoff_honours_retry_after_but_clamps_it():
    backoff = Backoff(rng=random.Random(3))
    assert backoff.next_delay(retry_after=7) >= 7
    assert backoff.next_delay(retry_after=10_000) <= 120


# --- configuration ---------------------------------------------------------------------------


def test_flags_win_over_env_and_env_over_defaults():
    env = {
        "RPC_URLS": "http://127.0.0.1:1, http://127.0.0.1:2",
        "CONTRACT_ADDRESS": ADDR,
        "EVENT_TOPIC": TOPIC,
    }
    from_env = build_config(env=env)
    assert [e.url for e in from_env.endpoints] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert from_env.log_filter.addresses == (ADDR,)
    assert from_env.log_filter.topics[0] == (TOPIC,)
    flagged = build_config(rpc=["http://127.0.0.1:3"], addresses=["0x" + "cd" * 20], env=env)
    assert [e.url for e in flagged.endpoints] == ["http://127.0.0.1:3"]
    assert flagged.log_filter.addresses == ("0x" + "cd" * 20,)
    assert [e.url for e in build_config(env={}).endpoints] == list(DEFAULT_RPC_URLS)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"rpc": ["ftp://x"]}, "invalid RPC URL"),
        ({"rpc": ["http://"]}, "invalid RPC URL"),
        # Without a scheme host:port read as scheme "localhost" and path "8545": say what it is.
        ({"rpc": ["localhost:8545"]}, "'localhost:8545': it needs its scheme, as in http://"),
        (
            {"rpc": ["rpc.example/v2/0123456789abcdef0123456789ab"]},
            "as in https://rpc.example/v2/***",
        ),
        ({"addresses": ["0x123"]}, "--address"),
        ({"addresses": ["0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266"]}, "checksum"),
        ({"topics": [["0x1234"]]}, "--topic0"),
        ({"topics": [[], [], [], ["nothex"]]}, "--topic3"),
        ({"from_block": 10, "to_block": 9}, "after"),
        ({"from_block": -1}, "negative"),
        ({"to_block": "pending"}, "--to-block"),
        ({"chunk_size": 0}, "--chunk-size"),
    ],
)
def test_bad_input_is_one_line_config_error(kwargs, fragment):
    with pytest.raises(ConfigError) as err:
        build_config(**{"rpc": ["http://127.0.0.1:1"], **kwargs})
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_filter_params_or_lists_and_trailing_wildcards():
    params = LogFilter((ADDR,), ((TOPIC, "0x" + "22" * 32), (), (TOPIC,), ())).rpc_params(16, 31)
    assert params == {
        "fromBlock": "0x10",
        "toBlock": "0x1f",
        "address": [ADDR],
        "topics": [[TOPIC, "0x" + "22" * 32], None, [TOPIC]],
    }
    assert "topics" not in LogFilter().rpc_params(0, 0)


# --- endpoints: names and redaction ------------------------------------------------------------


@pytest.mark.parametrize(
    "url,expected",
    [
        (
            "https://mainnet.infura.io/v3/0123456789abcdef0123456789abcdef",
            "https://mainnet.infura.io/v3/***",
        ),
        (
            "https://eth-mainnet.g.alchemy.com/v2/aBcD-eFgH_1234567890xyz",
            "https://eth-mainnet.g.alchemy.com/v2/***",
        ),
        ("https://rpc.ankr.com/eth_sepolia/" + "f" * 64, "https://rpc.ankr.com/eth_sepolia/***"),
        (
            "https://user:pass@node.example.com:8545/rpc?apikey=SECRET&x=1",
            "https://***@node.example.com:8545/rpc?apikey=***&x=***",
        ),
        ("https://sepolia.drpc.org", "https://sepolia.drpc.org"),
    ],
)
def test_redaction_hides_keys_in_paths_queries_and_credentials(url, expected):
    assert redact_url(url) == expected


def test_scrub_removes_secrets_from_error_text():
    url = "https://mainnet.infura.io/v3/0123456789abcdef0123456789abcdef"
    text = "Max retries exceeded with url: /v3/0123456789abcdef0123456789abcdef (Caused by ...)"
    assert "0123456789abcdef" not in scrub(text, url)


def test_short_names_come_from_the_provider_and_stay_distinct():
    assert short_name("https://ethereum-sepolia-rpc.publicnode.com") == "publicnode"
    assert short_name("https://rpc.ankr.com/eth_sepolia") == "ankr"
    assert short_name("http://127.0.0.1:8545") == "127.0.0.1:8545"
    names = [
        e.name
        for e in parse_endpoints(
            [
                "http://127.0.0.1:1",
                "http://127.0.0.1:2",
                "https://a.drpc.org",
                "https://b.drpc.org",
                "fast=http://127.0.0.1:3",
            ]
        )
    ]
    assert names == ["127.0.0.1:1", "127.0.0.1:2", "drpc", "drpc-2", "fast"]


# --- conversion ------------------------------------------------------------------------------


def _log(block, index, topics, data):
    return {
        "address": ADDR,
        "topics": topics,
        "data": data,
        "blockNumber": hex(block),
        "transactionHash": "0x" + "cc" * 32,
        "transactionIndex": "0x1",
        "blockHash": "0x" + "dd" * 32,
        "logIndex": hex(index),
        "removed": False,
    }


def test_conversion_handles_zero_to_four_topics_and_empty_data():
    topics = ["0x" + f"{i:02x}" * 32 for i in range(4)]
    logs = [_log(10, i, topics[:i], "0x" if i % 2 else "0x" + "ee" * (i + 1)) for i in range(5)]
    table = logs_to_table(logs, chain_id=5)
    assert table.schema == log_schema()
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        for j in range(4):
            expected = bytes.fromhex(topics[j][2:]) if j < i else None
            assert row[f"topic{j}"] == expected
        assert row["data"] == (b"" if i % 2 else bytes([0xEE]) * (i + 1))
        assert row["log_index"] == i and row["block_number"] == 10 and row["chain_id"] == 5
        assert row["address"] == bytes.fromhex(ADDR[2:])


def test_hex_output_keeps_0x_strings_and_nulls():
    table = logs_to_table([_log(1, 0, [TOPIC], "0x")], chain_id=1, hex_output=True)
    row = table.to_pylist()[0]
    assert row["topic0"] == TOPIC and row["topic1"] is None and row["data"] == "0x"
    assert table.schema.field("address").type == pa.string()


def test_empty_response_gives_empty_table_with_schema():
    assert logs_to_table([], chain_id=1).schema == log_schema()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda log: log.pop("blockHash"),
        lambda log: log.update(blockHash="0x1234"),
        lambda log: log.update(data="0xabc"),
        lambda log: log.update(blockNumber=None),
        lambda log: log.update(topics=["0xzz"]),
    ],
)
def test_malformed_logs_are_rejected(mutate):
    log = _log(1, 0, [TOPIC], "0x00")
    mutate(log)
    with pytest.raises(RpcError) as err:
        logs_to_table([log], chain_id=1)
    assert err.value.kind is ErrorKind.MALFORMED


# --- task queue leases ------------------------------------------------------------------------


def test_leases_of_a_dead_worker_are_requeued_and_not_done_twice():
    board = TaskBoard(ChunkPlan(0, 19, 10))
    first = board.claim("a", 0)
    second = board.claim("b", 0)
    assert board.claim("c", 0) is None
    assert board.accept(first.task_id)  # a's batch was stored before a died
    board.complete(first.task_id)
    assert board.release("a") == 0
    assert board.release("b") == 1
    again = board.claim("c", 0)
    assert again == second
    assert board.accept(again.task_id)
    board.complete(again.task_id)
    assert not board.accept(again.task_id)  # b's late batch for the same task is not stored
    assert board.state().settled and board.state().done == 2


def test_retry_goes_to_front_and_give_up_is_reported():
    board = TaskBoard(ChunkPlan(0, 19, 10))
    task = board.claim("a", 0)
    board.retry(Task(task.task_id, task.start, task.end, attempts=1))
    assert board.claim("b", 0).attempts == 1
    board.give_up(Task(0, 0, 9, attempts=2, last_error="x"))
    failed, unfetched = board.unfinished()
    assert [t.task_id for t in failed] == [0]
    assert [(t.start, t.end) for t in unfetched] == [(10, 19)]


def test_close_stops_handing_out_tasks():
    board = TaskBoard(ChunkPlan(0, 9, 10))
    board.close()
    assert board.claim("a", 0) is None and board.state().settled


# --- RPC client: transport errors are classified and never leak the URL's key -------------------

KEYED_URL = "https://mainnet.infura.io/v3/0123456789abcdef0123456789abcdef"


def _client():
    from pipeline.fetch.rpc import RpcClient

    return RpcClient(parse_endpoints([KEYED_URL])[0], timeout=1)


@pytest.mark.parametrize(
    "exc,kind,reason",
    [
        (
            requests.ConnectionError(
                f"Max retries exceeded with url: {KEYED_URL[26:]} (Caused by "
                "NewConnectionError('[Errno 111] Connection refused'))"
            ),
            ErrorKind.CONNECTION,
            "connection refused",
        ),
        (
            requests.ReadTimeout(f"HTTPSConnectionPool: Read timed out. url={KEYED_URL}"),
            ErrorKind.TIMEOUT,
            "timed out",
        ),
        (
            requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"),
            ErrorKind.CONNECTION,
            "ChunkedEncodingError",
        ),
    ],
)
def test_transport_errors_are_classified_without_the_key(mocker, exc, kind, reason):
    client = _client()
    mocker.patch.object(client.session, "post", side_effect=exc)
    with pytest.raises(RpcError) as err:
        get_logs(client, {"fromBlock": "0x0", "toBlock": "0x0"})
    assert err.value.kind is kind and reason in str(err.value)
    assert "0123456789abcdef" not in str(err.value)


def _response(status: int, body: bytes) -> requests.Response:
    """A real requests.Response streaming `body`, as session.post(stream=True) returns it."""
    response = requests.Response()
    response.status_code = status
    response.raw = urllib3.HTTPResponse(body=io.BytesIO(body), status=status, preload_content=False)
    return response


def test_error_bodies_quoting_the_url_are_scrubbed(mocker):
    client = _client()
    response = _response(401, f"invalid project id in {KEYED_URL}".encode())
    mocker.patch.object(client.session, "post", return_value=response)
    with pytest.raises(RpcError) as err:
        client.chain_id()
    assert err.value.kind is ErrorKind.UNAUTHORIZED
    assert "0123456789abcdef" not in str(err.value)


def test_a_non_list_get_logs_result_is_malformed(mocker):
    client = _client()
    response = _response(200, b'{"jsonrpc":"2.0","id":1,"result":{}}')
    mocker.patch.object(client.session, "post", return_value=response)
    with pytest.raises(RpcError) as err:
        get_logs(client, {})
    assert err.value.kind is ErrorKind.MALFORMED


# --- validation of what an endpoint returns ----------------------------------------------------

OTHER = "0x" + "22" * 32


@pytest.mark.parametrize("hex_output", [False, True])
@pytest.mark.parametrize(
    "logs,log_filter,problem",
    [
        ([_log(10, 0, [TOPIC], "0x")], LogFilter(), None),
        ([_log(10, 0, [TOPIC], "0x"), _log(21, 0, [TOPIC], "0x")], LogFilter(), "returned blocks"),
        ([_log(9, 0, [TOPIC], "0x")], LogFilter(), "returned blocks"),
        ([_log(10, 3, [TOPIC], "0x"), _log(10, 3, [TOPIC], "0x")], LogFilter(), "twice"),
        ([_log(10, 0, [TOPIC], "0x")], LogFilter(("0x" + "cd" * 20,)), "address"),
        ([_log(10, 0, [TOPIC], "0x")], LogFilter(topics=((OTHER,), (), (), ())), "topic0"),
        ([_log(10, 0, [TOPIC], "0x")], LogFilter(topics=((TOPIC,), (OTHER,), (), ())), "topic1"),
        (
            [_log(10, 0, [TOPIC, OTHER], "0x")],
            LogFilter((ADDR,), ((TOPIC, TOPIC), (OTHER,), (), ())),
            None,
        ),
    ],
)
def test_batches_outside_the_range_duplicated_or_off_filter_are_rejected(
    logs, log_filter, problem, hex_output
):
    table = logs_to_table(logs, chain_id=1, hex_output=hex_output)
    if problem is None:
        check_batch(table, Task(0, 10, 20), log_filter, hex_output)
        return
    with pytest.raises(RpcError) as err:
        check_batch(table, Task(0, 10, 20), log_filter, hex_output)
    assert err.value.kind is ErrorKind.MALFORMED and problem in err.value.message


def test_logs_marked_removed_are_rejected_and_a_filter_matches_receipt_logs():
    log = _log(10, 0, [TOPIC, OTHER], "0x")
    check_not_removed([log, {**log, "removed": False}])
    with pytest.raises(RpcError, match="removed"):
        check_not_removed([log, {**log, "removed": True}])
    assert LogFilter((ADDR,), ((TOPIC,), (OTHER,), (), ())).matches(log)
    assert not LogFilter(topics=((), (), (TOPIC,), ())).matches(log)  # it has no topic2
    assert not LogFilter(("0x" + "cd" * 20,)).matches(log)


# --- preflight: resolving the chain and the end block ------------------------------------------


def _probes(mocker, *answers, **options):
    """A config whose endpoints answer the preflight with `answers`: (chain id, head, error,
    refused tag, tag block) each."""
    from pipeline.run import preflight

    rpc = [f"http://127.0.0.1:{i + 1}" for i in range(len(answers))]
    config = build_config(rpc=rpc, **options)
    probes = [preflight.Probe(e, *a) for e, a in zip(config.endpoints, answers, strict=True)]
    mocker.patch.object(preflight, "probe", side_effect=probes)
    return config


def test_the_end_block_is_the_most_advanced_endpoints_and_laggards_are_named(mocker):
    from pipeline.run.preflight import resolve_plan

    down = (None, None, "connection_error: connection refused")
    config = _probes(mocker, (1, 120), (1, 100), down, to_block="latest")
    plan = resolve_plan(config)
    assert (plan.chain_id, plan.to_block) == (1, 120)
    assert [p.endpoint.name for p in plan.silent] == ["127.0.0.1:3"]
    assert [p.endpoint.name for p in plan.behind] == ["127.0.0.1:2"]
    assert plan.heads == {"127.0.0.1:1": 120, "127.0.0.1:2": 100}


@pytest.mark.parametrize(
    "answers,options,end,reason",
    [
        (((1, 500, "", False, 436), (1, 490, "", False, 426)), {}, 436, "finalized block"),
        (((1, 500, "permanent: no finalized", True),), {}, 436, "minus 64 confirmations"),
        (((137, 1000, "permanent: no finalized", True),), {}, 744, "minus 256"),
        (((1, 500, "", False, 468),), {"to_block": "safe"}, 468, "the safe block"),
        (((1, 500),), {"to_block": "latest-10"}, 490, "minus 10 confirmations"),
        (((1, 500),), {"confirmations": 12}, 488, "minus 12 confirmations"),
        (((1, 500),), {"to_block": 300}, 300, "--to-block"),
    ],
    ids=["finalized", "no-finalized", "polygon-depth", "safe", "latest-N", "confirmations", "n"],
)
def test_the_default_end_is_reorg_safe_and_every_end_says_why(
    mocker, answers, options, end, reason
):
    from pipeline.run.preflight import resolve_plan

    plan = resolve_plan(_probes(mocker, *answers, **options))
    assert plan.to_block == end and reason in plan.end_reason


@pytest.mark.parametrize(
    "answers,options,error,fragment",
    [
        (((1, 10), (5, 10)), {}, ConfigError, "different chains"),
        (
            ((1, 10, "permanent: the endpoint has no 'finalized' block", True),),
            {"to_block": "finalized"},
            ConfigError,
            "use a block number",
        ),
        (((None, None, "connection_error: refused"),), {}, NoEndpointError, "no endpoint"),
        (((1, None, "timeout: request timed out"),), {}, NoEndpointError, "no endpoint"),
        (((1, 100),), {"to_block": 101}, ConfigError, "beyond block 100"),
        (((1, 100),), {"to_block": "latest-200"}, ConfigError, "after the end block"),
    ],
)
def test_preflight_refuses_what_cannot_be_served(mocker, answers, options, error, fragment):
    from pipeline.run.preflight import resolve_plan

    with pytest.raises(error, match=fragment):
        resolve_plan(_probes(mocker, *answers, **options))


@pytest.mark.parametrize(
    "options,fragment",
    [
        ({"to_block": "finalized", "confirmations": 3}, "counts back from the head"),
        ({"to_block": "latest-2", "confirmations": 3}, "counts back from the head"),
        ({"confirmations": -1}, "must not be negative"),
        ({"to_block": "latest-x"}, "latest-N"),
    ],
)
def test_confirmations_only_count_back_from_the_head(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_config(rpc=["http://127.0.0.1:1"], **options)
