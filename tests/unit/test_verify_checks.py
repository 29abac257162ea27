"""Unit tests of the verification checks (pipeline.verify) and what they drive on the board and
in the writer's staging: blooms, near-head proofs, trust, row comparison, bloom exclusion,
reject/reopen/retire, and dropping a distrusted endpoint's staged fragments."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline import hashing
from pipeline.config.endpoints import Endpoint
from pipeline.config.settings import LogFilter
from pipeline.dev.verify import stored_logs
from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.convert import logs_to_table
from pipeline.fetch.rpc import BlockHeader
from pipeline.hashing import keccak256
from pipeline.messages import Distrust, FetchedBatch, Task, Verdict
from pipeline.plan.board import TaskBoard
from pipeline.plan.chunks import ChunkPlan
from pipeline.store.files import read_fragment, write_result
from pipeline.store.layout import LOGS_DIR, fragment_path, log_file_name
from pipeline.store.manifest import Manifest, load_manifest
from pipeline.store.staging import Staging
from pipeline.store.writer import Holding, WriterSpec
from pipeline.verify import audit
from pipeline.verify.audit import (
    KEY_COLUMNS,
    blocks_within,
    comparable,
    differing_blocks,
    index_gaps,
    receipts_table,
)
from pipeline.verify.auditor import RECEIPT_BATCH, Auditor
from pipeline.verify.bloom import BLOOM_BYTES, bloom_bits, bloom_of, may_contain, may_match
from pipeline.verify.bloomcheck import bloom_excluded
from pipeline.verify.canon import Canon
from pipeline.verify.headproof import HEAD_MARGIN, block_hashes, proof_blocks, prove
from pipeline.verify.sources import THROTTLED_RATE, Source, Sources
from pipeline.verify.trust import NEW_AUDITS, STRIKES_OUT, Ledger, Standing

ADDR = "0x" + "ab" * 20
OTHER_ADDR = "0x" + "cd" * 20
TOPIC = "0x" + "11" * 32  # topic0 of the logs the filter wants
OTHER_TOPIC = "0x" + "22" * 32
FILTER = LogFilter(addresses=(ADDR,), topics=((TOPIC,), (), (), ()))

TOO_MANY = RpcError(ErrorKind.RATE_LIMITED, "too many requests")


def raw(value: str) -> bytes:
    return bytes.fromhex(value[2:])


def block_hash(block: int) -> str:
    return f"0x{block + 0xB10C:064x}"


def log(block, index, topics=(TOPIC,), address=ADDR, data="0x", hash_=None) -> dict:
    """One log as eth_getLogs returns it."""
    return {
        "address": address,
        "topics": list(topics),
        "data": data,
        "blockNumber": hex(block),
        "blockHash": hash_ or block_hash(block),
        "transactionHash": f"0x{block:032x}{index:032x}",
        "transactionIndex": "0x0",
        "logIndex": hex(index),
        "removed": False,
        "blockTimestamp": hex(1_600_000_000 + 12 * block),
    }


def table(logs: list[dict], hex_output: bool = False):
    return logs_to_table(logs, 1, hex_output)


def header(block: int, bloom: bytes = b"", hash_: str | None = None) -> BlockHeader:
    return BlockHeader(hash_ or block_hash(block), 1_600_000_000 + 12 * block, bloom)


def bloom_of_logs(logs: list[dict]) -> bytes:
    """The bloom of a block holding these logs."""
    return bloom_of(
        item for lg in logs for item in (raw(lg["address"]), *(raw(t) for t in lg["topics"]))
    )


# --- bloom -----------------------------------------------------------------------------------


def test_a_bloom_contains_every_item_it_was_built_of_and_excludes_another():
    items = [raw(ADDR), raw(TOPIC), raw(OTHER_TOPIC)]
    bloom = bloom_of(items)
    assert len(bloom) == BLOOM_BYTES
    assert all(may_contain(bloom, item) for item in items)
    assert sum(bin(byte).count("1") for byte in bloom) <= 9  # three bits an item at most
    assert not may_contain(bloom, random.Random(3).randbytes(32))


def test_the_c_keccak_gives_pycryptodomes_digests_one_or_many_at_a_time(monkeypatch):
    rng = random.Random(5)
    items = [rng.randbytes(n) for n in (1, 20, 32, 135, 136, 137, 300)]
    batches = [[rng.randbytes(32) for _ in range(50)], [rng.randbytes(20) for _ in range(3)]]
    assert hashing._keccak is not None, "the C extension is built by the README's install"
    native = [keccak256(i) for i in items], [hashing.keccak256_each(b) for b in batches]
    monkeypatch.setattr(hashing, "_keccak", None)  # no compiler at install: pycryptodome
    assert native == ([keccak256(i) for i in items], [hashing.keccak256_each(b) for b in batches])
    assert hashing.keccak256_each(items) == b"".join(native[0])  # of several widths


def test_an_items_bits_are_the_low_11_bits_of_the_first_three_byte_pairs_of_its_keccak():
    # keccak256(b"") = c5d2 4601 86f7 ...: the published empty-input vector.
    assert keccak256(b"").hex().startswith("c5d2460186f7")
    assert bloom_bits(b"") == (0x5D2, 0x601, 0x6F7)
    item = raw(ADDR)
    digest = keccak256(item)
    expected = tuple(int.from_bytes(digest[i : i + 2], "big") % 2048 for i in (0, 2, 4))
    assert bloom_bits(item) == expected
    # Bit 0 is the lowest bit of the last byte (the bloom is one big-endian 2048-bit number).
    as_number = int.from_bytes(bloom_of([item]), "big")
    assert as_number == sum(1 << bit for bit in set(expected))


def test_may_match_with_an_empty_filter_is_true_unless_the_block_has_no_log():
    assert may_match(bloom_of([raw(ADDR)]), [], [[], [], [], []])
    assert not may_match(bytes(BLOOM_BYTES), [], [])  # an all-zero bloom: no log at all


def test_may_match_is_false_for_an_address_or_topic_the_bloom_excludes():
    bloom = bloom_of([raw(ADDR), raw(TOPIC)])
    assert may_match(bloom, [raw(ADDR)], [[raw(TOPIC)]])
    assert may_match(bloom, [raw(OTHER_ADDR), raw(ADDR)], [])  # addresses are ORed
    assert not may_match(bloom, [raw(OTHER_ADDR)], [])
    assert not may_match(bloom, [raw(ADDR)], [[raw(OTHER_TOPIC)]])


def test_an_empty_or_short_bloom_always_may_match():
    assert may_match(b"", [raw(OTHER_ADDR)], [[raw(OTHER_TOPIC)]])
    assert may_match(b"\xff" * 10, [raw(OTHER_ADDR)], [])


# --- near-head proofs ----------------------------------------------------------------------


class Node:
    """An endpoint's headers and receipts, recording what is asked."""

    def __init__(
        self, headers: dict[int, BlockHeader], receipts: dict[int, list[dict]] | None = None
    ):
        self.known, self.logs = headers, receipts or {}
        self.asked: list[list[int]] = []
        self.receipts_of: list[int] = []

    def headers(self, blocks: list[int]) -> dict[int, BlockHeader]:
        self.asked.append(list(blocks))
        return {b: self.known[b] for b in blocks if b in self.known}

    def receipts(self, block: int) -> list[dict]:
        self.receipts_of.append(block)
        return self.logs.get(block, [])


BLOCKS = range(100, 110)


def test_an_answer_with_logs_in_every_block_and_matching_hashes_passes():
    logs = [log(b, 0) for b in BLOCKS]
    node = Node({b: header(b, bloom_of_logs([log(b, 0)])) for b in BLOCKS})
    prove(table(logs), BLOCKS, FILTER, node.headers, node.receipts)
    assert node.asked == [[BLOCKS[-1]]]  # only toBlock: every other block has its logs' hash
    assert node.receipts_of == []


def test_a_missing_header_means_the_endpoint_is_behind():
    logs = [log(b, 0) for b in BLOCKS[:-3]]  # the last three blocks came back empty
    node = Node({b: header(b) for b in BLOCKS[:-1]})  # and it has no header of toBlock
    with pytest.raises(RpcError) as caught:
        prove(table(logs), BLOCKS, FILTER, node.headers, node.receipts)
    assert caught.value.kind is ErrorKind.BEYOND_HEAD
    assert node.asked == [[107, 108, 109]]


def test_a_log_whose_block_hash_is_not_the_headers_is_incorrect():
    logs = [log(b, 0) for b in BLOCKS]
    node = Node({b: header(b) for b in BLOCKS})
    node.known[109] = header(109, hash_="0x" + "ee" * 32)  # another fork's block 109
    with pytest.raises(RpcError) as caught:
        prove(table(logs), BLOCKS, FILTER, node.headers, node.receipts)
    assert caught.value.kind is ErrorKind.INCORRECT


def test_an_empty_block_whose_bloom_and_receipts_hold_a_matching_log_means_behind():
    logs = [log(b, 0) for b in BLOCKS if b != 105]  # block 105 left out
    node = Node(
        {b: header(b, bloom_of_logs([log(b, 0)])) for b in BLOCKS},
        receipts={105: [log(105, 0)]},
    )
    with pytest.raises(RpcError) as caught:
        prove(table(logs), BLOCKS, FILTER, node.headers, node.receipts)
    assert caught.value.kind is ErrorKind.BEYOND_HEAD
    assert node.receipts_of == [105]


def test_an_empty_block_whose_bloom_matches_falsely_passes_on_its_receipts():
    logs = [log(b, 0) for b in BLOCKS if b != 105]
    node = Node(
        {b: header(b, bloom_of_logs([log(b, 0)])) for b in BLOCKS},
        receipts={105: [log(105, 0, address=OTHER_ADDR), log(105, 1, topics=[OTHER_TOPIC])]},
    )
    prove(table(logs), BLOCKS, FILTER, node.headers, node.receipts)
    assert node.receipts_of == [105]


def test_an_empty_block_whose_bloom_excludes_the_filter_needs_no_receipts():
    logs = [log(b, 0) for b in BLOCKS if b != 105]
    node = Node({b: header(b, bloom_of([raw(OTHER_ADDR)])) for b in BLOCKS})
    prove(table(logs), BLOCKS, FILTER, node.headers, node.receipts)
    assert node.asked == [[105, 109]] and node.receipts_of == []


def test_proof_blocks_are_only_those_within_the_margin_of_the_head():
    head = 10_000
    assert not proof_blocks(0, head - HEAD_MARGIN, head)  # all below the margin
    assert not proof_blocks(head - 10, head, None)  # head unknown
    top = proof_blocks(head - 2 * HEAD_MARGIN, head, head)
    assert top == range(head - HEAD_MARGIN + 1, head + 1)


def test_block_hashes_are_per_block_and_0x_whatever_the_output_form():
    logs = [log(5, 0), log(5, 1), log(6, 0), log(9, 0)]
    for hex_output in (False, True):
        assert block_hashes(table(logs, hex_output), range(5, 7)) == {
            5: block_hash(5),
            6: block_hash(6),
        }


# --- trust -------------------------------------------------------------------------------------


def test_with_audit_rate_0_no_answer_of_a_good_endpoint_is_audited():
    ledger = Ledger(["a"], 0.0)
    assert not any(ledger.audit_due("a") for _ in range(200))
    assert ledger.standing("a") is Standing.TRUSTED


def test_a_new_endpoints_first_answers_are_audited_then_about_the_rate():
    rate = 0.05
    ledger = Ledger(["a"], rate, seed=11)
    assert ledger.standing("a") is Standing.NEW
    assert all(ledger.audit_due("a") for _ in range(NEW_AUDITS))
    assert ledger.standing("a") is Standing.TRUSTED and ledger.trusted("a")
    audited = sum(ledger.audit_due("a") for _ in range(2000))
    assert 0 < audited <= 3 * rate * 2000


def test_one_strike_makes_an_endpoint_suspect_and_every_answer_audited():
    ledger = Ledger(["a", "b"], 0.01)
    for _ in range(NEW_AUDITS):
        ledger.audit_due("a")
    assert ledger.strike("a") is Standing.SUSPECT
    assert not ledger.trusted("a") and ledger.trusted("b")
    assert all(ledger.audit_due("a") for _ in range(100))


def test_strikes_out_strikes_take_an_endpoint_out():
    ledger = Ledger(["a"], 0.1)
    standings = [ledger.strike("a") for _ in range(STRIKES_OUT)]
    assert standings[:-1] == [Standing.SUSPECT] * (STRIKES_OUT - 1)
    assert standings[-1] is Standing.OUT and ledger.standing("a") is Standing.OUT
    assert not ledger.trusted("a")


# --- audit: row comparison -----------------------------------------------------------------


def answer() -> list[dict]:
    return [log(b, i, data=f"0x{b:04x}{i:02x}") for b in range(200, 210) for i in range(3)]


def test_equal_answers_differ_in_no_block():
    assert differing_blocks(table(answer()), table(answer())) == []
    assert comparable(table(answer())).column_names == list(KEY_COLUMNS)


def test_a_dropped_log_shows_its_block():
    fewer = [lg for lg in answer() if (lg["blockNumber"], lg["logIndex"]) != (hex(204), "0x1")]
    assert differing_blocks(table(answer()), table(fewer)) == [204]
    assert differing_blocks(table(fewer), table(answer())) == [204]


def test_a_changed_data_field_shows_its_block():
    changed = answer()
    changed[20] = {**changed[20], "data": "0xdeadbeef"}
    assert differing_blocks(table(answer()), table(changed)) == [206]


def test_differences_outside_the_given_blocks_are_ignored():
    changed = answer()
    changed[20] = {**changed[20], "data": "0xdeadbeef"}  # block 206
    changed = [lg for lg in changed if lg["blockNumber"] != hex(201)]
    assert differing_blocks(table(answer()), table(changed)) == [201, 206]
    assert differing_blocks(table(answer()), table(changed), {200, 202, 203}) == []
    assert differing_blocks(table(answer()), table(changed), {206, 207}) == [206]


def test_row_order_does_not_matter():
    shuffled = answer()
    random.Random(5).shuffle(shuffled)
    assert differing_blocks(table(answer()), table(shuffled)) == []


# --- the verifier's bloom check ------------------------------------------------------------


def good_logs(count: int) -> list[dict]:
    return [log(300 + i // 5, i % 5, topics=[TOPIC, f"0x{i:064x}"]) for i in range(count)]


def headers_for(logs: list[dict]) -> dict[int, BlockHeader]:
    by_block: dict[int, list[dict]] = {}
    for lg in logs:
        by_block.setdefault(int(lg["blockNumber"], 16), []).append(lg)
    return {b: header(b, bloom_of_logs(lgs)) for b, lgs in by_block.items()}


@pytest.mark.parametrize("hex_output", [False, True])
def test_logs_all_within_their_blooms_pass(hex_output):
    logs = good_logs(500)
    assert bloom_excluded(table(logs, hex_output), headers_for(logs), random.Random(0)) is None


@pytest.mark.parametrize("hex_output", [False, True])
def test_every_logs_topic0_is_held_against_its_blooms_not_just_a_samples(hex_output):
    logs = good_logs(500)
    headers = headers_for(logs)
    bad = log(350, 9, topics=[OTHER_TOPIC])  # block 350 has good logs; its bloom lacks this one
    assert not may_contain(headers[350].bloom, raw(OTHER_TOPIC))
    logs.insert(251, bad)
    for seed in range(5):
        assert bloom_excluded(table(logs, hex_output), headers, random.Random(seed)) == 350


def test_a_logs_address_outside_its_blooms_is_caught():
    logs = good_logs(100)
    headers = headers_for(logs)
    logs.append(log(310, 7, address=OTHER_ADDR))
    assert bloom_excluded(table(logs), headers, random.Random(0)) == 310


def test_headers_without_a_bloom_are_skipped():
    logs = good_logs(50)
    headers = {b: header(b) for b in headers_for(logs)}  # no bloom readable
    logs.append(log(303, 9, topics=[OTHER_TOPIC], address=OTHER_ADDR))
    assert bloom_excluded(table(logs), headers, random.Random(0)) is None
    assert bloom_excluded(table([]), {}, random.Random(0)) is None


def test_a_receipts_audit_of_a_large_answer_reads_blocks_holding_at_most_its_log_budget():
    logs = [log(300 + i // 10, i % 10) for i in range(200)]  # blocks 300-319, 10 logs each
    answer = table(logs)
    for seed in range(5):
        chosen = blocks_within(answer, range(290, 330), 55, random.Random(seed))
        with_logs = [b for b in chosen if 300 <= b <= 319]
        assert len(with_logs) == 5 and len(set(chosen)) == len(chosen)
        assert set(range(290, 300)) | set(range(320, 330)) <= set(chosen)  # empty ones cost 0
    assert sorted(blocks_within(answer, range(290, 330), 10_000, random.Random(0))) == list(
        range(290, 330)
    )
    assert len(blocks_within(answer, range(300, 301), 1, random.Random(0))) == 1  # at least one


@pytest.mark.parametrize("hex_output", [False, True])
@pytest.mark.parametrize("fast", [True, False])
def test_receipts_give_the_filters_logs_as_the_careful_path_would(mocker, hex_output, fast):
    receipts = [
        log(5, 0),
        log(5, 1, topics=[OTHER_TOPIC]),  # the filter's address, another topic0
        log(5, 2, address=OTHER_ADDR),  # another contract's log in the same block
        log(5, 3, topics=[TOPIC, OTHER_TOPIC], data="0x" + "ee" * 40),
        log(5, 4, topics=[]),  # an anonymous log: no topic0 at all
    ]
    client = mocker.MagicMock()  # reading() is a context manager
    client.block_logs.return_value = receipts
    if fast:
        parsed = mocker.spy(audit, "body_to_table")
    else:  # the fast parsers refuse the body: one dict per log instead
        mocker.patch.object(audit, "body_to_table", return_value=None)
    got = receipts_table(client, [5], FILTER, 1, hex_output)
    if fast:
        assert parsed.spy_return is not None
    wanted = [receipts[0], receipts[3]]
    assert got.select(list(KEY_COLUMNS)).equals(
        logs_to_table(wanted, 1, hex_output).select(list(KEY_COLUMNS))
    )


def test_blocks_whose_header_was_not_read_are_not_judged():
    logs = good_logs(50)  # blocks 300-309
    headers = headers_for(logs)
    del headers[305]  # a check reads a sample of the headers under --rps
    logs += [log(305, 9, topics=[OTHER_TOPIC]), log(299, 0, topics=[OTHER_TOPIC])]
    assert bloom_excluded(table(logs), headers, random.Random(0)) is None
    logs.append(log(309, 9, topics=[OTHER_TOPIC]))
    assert bloom_excluded(table(logs), headers, random.Random(0)) == 309


# --- the board: reject, reopen, retire -----------------------------------------------------


def board(start=0, end=999, chunk=1000, endpoints=("a", "b")) -> TaskBoard:
    return TaskBoard(ChunkPlan(start, end, chunk), endpoints)


def accepted(b: TaskBoard, worker: str = "a#0") -> Task:
    task = b.claim(worker, 0)
    assert b.accept(task.task_id)
    return task


def test_a_rejected_task_goes_back_with_one_more_attempt_kept_from_the_liar():
    b = board()
    task = accepted(b)
    b.reject(task.task_id, "a", "a answered wrongly", max_attempts=5)
    assert b.state().pending == 1 and b.state().leased == 0
    assert b.claim("a#0", 0) is None  # the liar does not get it back
    again = b.claim("b#0", 0)
    assert (again.start, again.end, again.attempts) == (task.start, task.end, 1)
    assert again.excluded == {"a"} and again.last_error == "a answered wrongly"


def test_a_rejected_task_is_not_kept_from_the_only_live_endpoint():
    b = board(endpoints=("a",))
    task = accepted(b)
    b.reject(task.task_id, "a", "wrong", max_attempts=5)
    again = b.claim("a#0", 0)
    assert again is not None and again.excluded == frozenset() and again.attempts == 1

    b = board(endpoints=("a", "b"))
    task = accepted(b)
    b.retire("b")
    b.reject(task.task_id, "a", "wrong", max_attempts=5)
    assert b.claim("a#0", 0).excluded == frozenset()


def test_a_rejected_task_fails_once_its_attempts_are_used_up():
    b = board(endpoints=("a",))  # the liar is never kept from it: it tries again each time
    for attempt in range(1, 4):
        task = accepted(b)
        assert task.attempts == attempt - 1
        b.reject(task.task_id, "a", f"wrong {attempt}", max_attempts=3)
    state = b.state()
    assert (state.pending, state.leased, state.failed, state.settled) == (0, 0, 1, True)
    failed, never = b.unfinished()
    assert [(t.start, t.end, t.attempts) for t in failed] == [(0, 999, 3)] and never == []


def test_rejecting_a_task_that_is_not_being_stored_does_nothing():
    b = board()
    task = b.claim("a#0", 0)  # leased, never accepted
    b.reject(task.task_id, "a", "wrong", max_attempts=1)
    assert b.state().leased == 1 and b.state().failed == 0


def test_reopen_adds_a_task_for_the_range_kept_from_the_liar():
    b = board()
    accepted(b)  # the plan's one task, being stored
    b.reopen(100, 199, "a", "a was distrusted")
    assert b.state().pending == 1
    assert b.claim("a#0", 0) is None
    task = b.claim("b#0", 0)
    assert (task.start, task.end, task.excluded) == (100, 199, {"a"})
    assert task.last_error == "a was distrusted"
    assert b.accept(task.task_id)


def test_retiring_the_last_live_endpoint_fails_the_pending_tasks_and_the_uncut_plan():
    b = board(0, 9999, 1000, endpoints=("a", "b"))
    first = b.claim("a#0", 0)
    b.retry(first)  # back on the queue
    b.retire("b")
    assert b.state().pending > 1 and b.state().failed == 0  # "a" is still there
    b.retire("a", fail_rest=True)
    state = b.state()
    assert (state.pending, state.leased, state.settled) == (0, 0, True)
    failed, never = b.unfinished()
    assert [(t.start, t.end) for t in failed] == [(0, 999), (1000, 9999)] and never == []
    assert b.claim("a#0", 0) is None


def test_retiring_the_last_endpoint_fails_every_uncut_range_of_a_plan_with_gaps():
    plan = ChunkPlan(0, 0, 1000, ranges=[(0, 999), (5000, 5999), (9000, 9999)])
    b = TaskBoard(plan, ["a"])
    b.retire("a", fail_rest=True)
    failed, _ = b.unfinished()
    assert [(t.start, t.end) for t in failed] == [(0, 999), (5000, 5999), (9000, 9999)]


def test_the_verifiers_calls_are_owed_once_to_the_endpoints_worker():
    tasks = board()
    tasks.lend("a", 3)
    tasks.lend("a", 2)
    assert tasks.debt("b") == 0
    assert tasks.debt("a") == 5 and tasks.debt("a") == 0


def test_a_range_reopened_after_the_last_endpoint_is_retired_fails_at_once():
    b = board(endpoints=("a",))
    b.retire("a", fail_rest=True)
    b.reopen(0, 99, "a", "a was distrusted")
    assert b.state().settled


def test_index_gaps_are_the_blocks_whose_log_indexes_skip_one():
    def answer(*rows: tuple[int, int]):
        return table([log(block, index) for block, index in rows])

    assert index_gaps(answer((5, 0), (5, 1), (5, 2), (7, 0), (7, 1))) == []
    assert index_gaps(answer((5, 0), (5, 1), (5, 3), (7, 0), (7, 1))) == [5]  # 2 missing
    assert index_gaps(answer((5, 0), (7, 1), (7, 2), (9, 0))) == [7]  # its first one missing
    assert index_gaps(answer((5, 0), (5, 1))) == []  # were there a 5:2, no gap shows: audits
    assert index_gaps(answer()) == []


# --- the writer: dropping a distrusted endpoint's staged fragments -------------------------


@pytest.fixture
def staging(tmp_path) -> Staging:
    fragment_path(tmp_path, 0, 0).parent.mkdir(parents=True)
    manifest = Manifest(1, {"addresses": [], "topics": []}, hex_output=False)
    return Staging(tmp_path, manifest, todo=((0, 999),), staged=(), file_blocks=1000)


def stage(staging: Staging, start: int, end: int, endpoint: str) -> None:
    logs = [log(b, 0) for b in range(start, end + 1, 10)]
    result = staging.out / f"result_{start}.arrow"
    write_result(table(logs), result)
    staging.add(result, start, end, len(logs), endpoint)


def test_drop_from_deletes_the_endpoints_fragments_and_returns_their_ranges_and_rows(staging):
    stage(staging, 0, 99, "x")
    stage(staging, 100, 199, "y")
    stage(staging, 200, 299, "x")
    assert staging.missing[0] == 700
    assert staging.drop_from("x") == [(0, 99, 10), (200, 299, 10)]  # (start, end, rows)
    assert staging.missing[0] == 900
    assert not fragment_path(staging.out, 0, 99).exists()
    assert not fragment_path(staging.out, 200, 299).exists()
    assert fragment_path(staging.out, 100, 199).exists()
    assert [f[:2] for f in staging.fragments[0]] == [(100, 199)]
    assert staging.drop_from("x") == [] and staging.drop_from("z") == []
    assert staging.manifest.covered == []  # nothing was compacted


def test_a_window_compacts_only_once_the_dropped_ranges_are_staged_again(staging):
    stage(staging, 0, 499, "x")
    stage(staging, 500, 899, "y")
    staging.drop_from("x")
    stage(staging, 900, 999, "y")
    assert staging.manifest.covered == []  # 0..499 is missing again
    stage(staging, 0, 499, "y")
    assert staging.manifest.covered == [(0, 999)]


def test_reopen_from_takes_back_this_runs_final_file_holding_the_endpoints_ranges(staging):
    stage(staging, 0, 499, "x")
    stage(staging, 500, 999, "y")  # the window is complete: compacted into a final file
    final = staging.out / LOGS_DIR / log_file_name(0, 999)
    stored = stored_logs(staging.out / LOGS_DIR)
    assert staging.manifest.covered == [(0, 999)] and final.exists()
    assert staging.reopen_from("x") == [(0, 499, 50)]  # fetched again by the others
    assert staging.manifest.covered == [] and staging.manifest.files == {}
    assert not final.exists()
    assert staging.missing[0] == 500
    assert read_fragment(fragment_path(staging.out, 500, 999)).num_rows == 50  # y's, staged again
    assert staging.reopen_from("x") == [] and staging.reopen_from("y") == []
    stage(staging, 0, 499, "y")  # x's blocks, from y: the window compacts again, whole
    assert staging.manifest.covered == [(0, 999)] and final.exists()
    assert stored_logs(staging.out / LOGS_DIR).equals(stored)


def test_reopen_from_forgets_the_final_file_before_staging_its_rows_again(staging, mocker):
    stage(staging, 0, 499, "x")
    stage(staging, 500, 999, "y")
    mocker.patch("pipeline.store.staging.write_fragment", side_effect=OSError("disk full"))
    with pytest.raises(OSError):
        staging.reopen_from("x")
    # Cut short here, a resume deletes the file the manifest no longer lists and fetches again.
    saved = load_manifest(staging.out)
    assert saved is not None and saved.covered == [] and saved.files == {}


def test_reopen_from_forgets_a_range_without_logs_that_only_the_endpoint_fetched(staging):
    empty = staging.out / "empty.arrow"
    write_result(table([]), empty)
    staging.add(empty, 0, 999, 0, "x")  # no logs at all: recorded as covered, no file
    assert staging.manifest.covered == [(0, 999)] and staging.manifest.files == {}
    assert staging.reopen_from("x") == [(0, 999, 0)]
    assert staging.manifest.covered == [] and staging.missing[0] == 1000


def test_an_earlier_runs_files_and_empty_ranges_a_caught_liar_had_a_part_in_are_taken_back(
    staging,
):
    fingerprints = {"x": "f" * 16, "y": "e" * 16}
    staging.fingerprints = fingerprints
    stage(staging, 0, 499, "x")
    stage(staging, 500, 999, "y")  # final file 0-999, fetched by x and y
    later = Staging(staging.out, staging.manifest, ((1000, 3999),), (), 1000)
    later.fingerprints = fingerprints
    for start, end, who, rows in ((1000, 1999, "y", 10), (2000, 2999, "x", 0)):
        result = later.out / f"result_{start}.arrow"
        write_result(table([log(b, 0) for b in range(start, start + rows)]), result)
        later.add(result, start, end, rows, who)
    assert later.manifest.files[log_file_name(0, 999)]["fetched_by"] == sorted(
        fingerprints.values()
    )
    assert later.manifest.empty == [
        {"from_block": 2000, "to_block": 2999, "fetched_by": ["f" * 16]}
    ]
    # A third run caught x: what x had a part in is fetched again whole; y's own file stays.
    third = Staging(
        later.out, load_manifest(later.out), ((3000, 3999),), (), 1000, fingerprints=fingerprints
    )
    assert third.reopen_from("x") == [] and third.reopen_earlier("x") == [
        (0, 999, 100),
        (2000, 2999, 0),
    ]
    saved = load_manifest(third.out)
    assert saved.covered == [(1000, 1999)] and list(saved.files) == [log_file_name(1000, 1999)]
    assert saved.empty == [] and not (third.out / LOGS_DIR / log_file_name(0, 999)).exists()
    assert third.missing[0] == 1000 and third.missing[2] == 1000
    assert third.reopen_earlier("x") == [] and third.reopen_earlier("y") == [(1000, 1999, 10)]


class FakeBoard:
    """What Holding asks of the board, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def accept(self, task_id: int, rows: int | None = None) -> bool:
        self.calls.append(("accept", task_id, rows))
        return True

    def complete(self, task_id: int, rows: int | None = None) -> None:
        self.calls.append(("complete", task_id, rows))

    def reject(self, task_id, liar, reason, max_attempts=0, attempt=True) -> None:
        self.calls.append(("reject", task_id, liar, reason, max_attempts if attempt else None))

    def reopen(self, start, end, liar, reason) -> None:
        self.calls.append(("reopen", start, end, liar, reason))


class Events(list):
    put = list.append


def holding(staging: Staging) -> tuple[Holding, FakeBoard]:
    spec = WriterSpec(staging.out, staging.manifest, (), (), 1000, verify=True, max_attempts=4)
    fake = FakeBoard()
    return Holding(spec, staging, fake, Events()), fake


def batch(staging: Staging, task: Task, endpoint: str) -> FetchedBatch:
    path = staging.out / f"held_{task.task_id}.arrow"
    write_result(table([log(task.start, 0)]), path)
    return FetchedBatch(task, endpoint, str(path), 1)


def test_holding_stages_a_passed_batch_under_its_endpoint_and_rejects_a_failed_one(staging):
    held, fake = holding(staging)
    good, bad = batch(staging, Task(1, 0, 9), "x"), batch(staging, Task(2, 10, 19), "y")
    held.hold(good)
    held.hold(bad)
    held.settle(Verdict(2, False, "y answered wrongly", liar="y"))
    held.settle(Verdict(1, True))
    assert not Path(bad.path).exists() and fragment_path(staging.out, 0, 9).exists()
    assert staging.sources == {(0, 9): "x"}
    assert ("reject", 2, "y", "y answered wrongly", 4) in fake.calls
    assert ("accept", 1, 1) in fake.calls and ("complete", 1, None) in fake.calls  # rows learned


def test_distrust_reopens_every_range_the_endpoint_staged(staging):
    held, fake = holding(staging)
    stage(staging, 0, 99, "x")
    stage(staging, 100, 199, "y")
    stage(staging, 200, 299, "x")
    held.distrust(Distrust("x", "x answered wrongly"))
    assert [c for c in fake.calls if c[0] == "reopen"] == [
        ("reopen", 0, 99, "x", "x answered wrongly"),
        ("reopen", 200, 299, "x", "x answered wrongly"),
    ]


def test_distrust_drops_the_endpoints_batches_still_waiting_for_their_verdict(staging):
    # A check that began before the strike may pass the liar's answer: its verdict, coming
    # after the distrust, must not stage it.
    held, fake = holding(staging)
    liars, honest = batch(staging, Task(1, 0, 9), "x"), batch(staging, Task(2, 10, 19), "y")
    held.hold(liars)
    held.hold(honest)
    held.distrust(Distrust("x", "x answered wrongly"))
    assert ("reject", 1, "x", "x answered wrongly", None) in fake.calls  # not an attempt
    assert not Path(liars.path).exists()
    held.settle(Verdict(1, True))
    held.settle(Verdict(2, True))
    assert staging.sources == {(10, 19): "y"}
    assert not fragment_path(staging.out, 0, 9).exists()


def test_a_task_handed_back_for_its_endpoints_lie_keeps_its_attempts():
    board = TaskBoard(ChunkPlan.over(((0, 9),), 10), ["x", "y"])
    task = board.claim("x#0", 0.0)
    assert board.accept(task.task_id, 1)
    board.reject(task.task_id, "x", "x answered wrongly", max_attempts=None)
    again = board.claim("y#0", 0.0)
    assert (again.start, again.end, again.attempts) == (0, 9, 0)
    assert again.excluded == {"x"} and board.claim("x#0", 0.0) is None


# --- the verifier's sources ------------------------------------------------------------------


def source(rps: float | None = None) -> Source:
    endpoint = Endpoint("a", "http://127.0.0.1:1", "http://127.0.0.1:1", rps=rps)
    return Source(endpoint, timeout=1.0, on_request=lambda name, calls, error: None)


def test_a_batch_refused_for_its_size_is_sent_again_smaller_and_everything_is_answered():
    limited, sent = source(), []

    def request(client, chunk):
        if len(chunk) > 2:
            raise RpcError(ErrorKind.QUOTA, "Batch of more than 2 requests are not allowed")
        sent.append(chunk)
        return chunk

    answers = limited.in_batches(list(range(10)), request)
    assert [b for chunk in answers for b in chunk] == list(range(10))
    assert all(len(chunk) <= 2 for chunk in sent)
    assert not limited.resting()  # a batch limit is not a fault of the endpoint


def test_a_fault_that_is_not_about_the_batch_is_raised_and_the_endpoint_rests():
    failing = source()

    def request(client, chunk):
        raise RpcError(ErrorKind.RATE_LIMITED, "too many requests")

    with pytest.raises(RpcError):
        failing.in_batches([1, 2, 3], request)
    assert failing.resting() > 0


def test_on_an_endpoint_with_rps_the_checks_book_only_their_share_two_seconds_ahead(mocker):
    paced = source(rps=100)  # a tenth of it for the verifier: 10 calls a second
    mocker.patch("pipeline.verify.sources.time.sleep")
    assert paced.room(50) == 20  # 2 s worth: a check asks for a sample of that size
    paced.ask(20, lambda client: None)  # a batch of 20 calls books 20 slots
    assert paced.room(50) <= 1
    assert source(rps=None).room(5000) == 5000  # without --rps nothing is sampled


def test_once_nothing_is_fetched_the_checks_may_use_the_whole_rps_even_after_a_throttle():
    paced = source(rps=100)
    assert paced.throttle.rate == 10  # a tenth while the worker fetches
    paced.share(1.0)  # its worker has nothing left to send
    assert paced.throttle.rate == 100 and paced.room(500) == 200
    paced.share(0.1)  # a task came back
    assert paced.throttle.rate == 10
    paced.throttled(TOO_MANY, 1)
    assert paced.throttle.rate == THROTTLED_RATE  # the checks give way to the worker
    paced.share(1.0)
    assert paced.throttle.rate == THROTTLED_RATE  # the worker may still send: a share stays low
    paced.give_way(False)  # it will not: the endpoint is the checks' alone
    assert paced.throttle.rate == 100
    paced.throttled(TOO_MANY, 1)
    assert paced.throttle.rate == 50  # halved, as a worker's, not down to THROTTLED_RATE
    paced.give_way(False)  # the supervisor says so again at its next look
    assert paced.throttle.rate == 50  # what the checks' own throttle taught them stays
    for _ in range(10):  # 429s whatever the pace: halved, but never below THROTTLED_RATE
        paced.throttle._paused_until = 0  # each after the pause the last one asked for
        paced.throttled(TOO_MANY, 1)
    assert paced.throttle.rate == THROTTLED_RATE
    unpaced = source(rps=None)
    unpaced.throttled(TOO_MANY, 1)
    assert unpaced.throttle.rate == THROTTLED_RATE
    unpaced.share(1.0)
    unpaced.give_way(False)
    assert unpaced.throttle.rate is None and unpaced.room(5000) == 5000


def test_slots_booked_at_a_throttled_rate_are_free_once_the_worker_is_done():
    unpaced = source(rps=None)
    unpaced.throttled(TOO_MANY, 1)
    assert unpaced.room(2) == 2  # booked at THROTTLED_RATE: now and in 1 s
    assert unpaced.throttle.backlog() > 1.9
    unpaced.give_way(False)
    assert unpaced.throttle.backlog() == 0 and unpaced._slots(2) == 0


def test_slots_booked_at_the_checks_share_come_sooner_once_they_may_use_the_whole_rps():
    paced = source(rps=10)  # 1 call a second for the checks while the worker fetches
    assert paced.room(2) == 2  # booked: now and 1 s from now
    assert 1.9 < paced.throttle.backlog() <= 2.0
    paced.share(1.0)  # 10 calls a second: what was booked 1-2 s ahead is 0.1-0.2 s ahead
    assert paced.throttle.backlog() <= 0.2
    assert paced._slots(2) <= 0.2


def test_an_endpoint_that_lacks_a_block_is_not_picked_for_it_until_it_answers_one():
    sources = Sources(
        [Endpoint(n, f"http://127.0.0.1:{i}", "x") for i, n in enumerate("ab")],
        timeout=1.0,
        on_request=lambda name, calls, error: None,
    )
    trusted = lambda name: True  # noqa: E731
    sources.all["b"].lacks(120)
    assert sources.pick({"a"}, trusted, upto=119) is sources.all["b"]
    assert sources.pick({"a"}, trusted, upto=120) is None
    sources.all["b"].has(130)
    assert sources.pick({"a"}, trusted, upto=130) is sources.all["b"]


# --- canonical headers: one batch for the checks waiting together ----------------------------


def test_headers_wanted_together_go_out_in_one_batch_and_a_closed_canon_refuses_more(mocker):
    sources = Sources(
        [Endpoint(n, f"http://127.0.0.1:{i + 1}", "x") for i, n in enumerate("ab")],
        timeout=1.0,
        on_request=lambda name, calls, error: None,
    )
    asked: list[list[int]] = []

    class Client:
        def block_headers(self, blocks):
            asked.append(sorted(blocks))
            return {b: header(b) for b in blocks}, None

    for each in sources.all.values():
        mocker.patch.object(each, "ask", side_effect=lambda calls, request: request(Client()))
    canon = Canon(sources, trusted=lambda name: True)
    wanted = [{10 * i, 10 * i + 1} for i in range(8)]  # 8 checks of a's answers at once
    with ThreadPoolExecutor(len(wanted)) as pool:
        got = list(pool.map(lambda blocks: canon.get(blocks, avoid="a"), wanted))
    assert [sorted(g) for g in got] == [sorted(w) for w in wanted]
    assert asked == [sorted(set().union(*wanted))]  # one request, of b, for all of them
    assert canon.get({10}, avoid="a") == {10: header(10)}  # remembered: not asked again
    canon.close()
    with pytest.raises(RpcError):
        canon.get({999}, avoid="a")


def test_checks_waiting_together_get_their_headers_from_an_endpoint_that_fails_some_requests(
    mocker,
):
    # One header a request, every third request failing: a round ends at its first failure,
    # having served only the lowest blocks. The wants not reached yet used to count the round
    # as a miss, and gave up after 8 (their answers were then fetched again).
    sources = Sources(
        [Endpoint("a", "http://127.0.0.1:1", "x")],
        timeout=1.0,
        on_request=lambda name, calls, error: None,
    )
    asked: list[int] = []

    class Client:
        def block_headers(self, blocks):
            asked.extend(blocks)
            if len(asked) % 3 == 0:
                raise RpcError(ErrorKind.MALFORMED, "not a JSON-RPC response: {...")
            return {b: header(b) for b in blocks}, None

    alone = sources.all["a"]
    alone.batches.size = alone.batches.ceiling = 1
    mocker.patch.object(alone, "ask", side_effect=lambda calls, request: request(Client()))
    canon = Canon(sources, trusted=lambda name: True)
    wanted = [set(range(100 * i, 100 * i + 20)) for i in range(3)]  # 3 checks, 20 blocks each
    with ThreadPoolExecutor(len(wanted)) as pool:
        got = list(pool.map(lambda blocks: canon.get(blocks, avoid="a"), wanted))
    canon.close()
    assert [sorted(g) for g in got] == [sorted(w) for w in wanted]


def test_headers_a_batch_brings_none_of_are_asked_for_in_smaller_batches_then_singly(mocker):
    # A gateway that garbles batch answers (ids it does not echo) answers single calls: the
    # checks got "3 of 3 calls not answered" and asked the same batch again until they failed.
    sources = Sources(
        [Endpoint(n, f"http://127.0.0.1:{i + 1}", "x") for i, n in enumerate("ab")],
        timeout=1.0,
        on_request=lambda name, calls, error: None,
    )
    asked: list[int] = []

    class Client:
        def block_headers(self, blocks):
            asked.append(len(blocks))
            if len(blocks) > 1:
                unanswered = RpcError(ErrorKind.MALFORMED, f"{len(blocks)} calls not answered")
                return {}, unanswered
            return {b: header(b) for b in blocks}, None

    for each in sources.all.values():
        mocker.patch.object(each, "ask", side_effect=lambda calls, request: request(Client()))
    canon = Canon(sources, trusted=lambda name: True)
    try:
        assert canon.get({1, 2, 3, 4}, avoid="a") == {b: header(b) for b in (1, 2, 3, 4)}
    finally:
        canon.close()
    assert asked[0] == 4 and asked[-4:] == [1, 1, 1, 1]


def test_a_receipts_audit_reads_a_few_blocks_a_request(mocker):
    # A block's receipts as Python objects take ~20x its logs' table: 8 blocks a request keep
    # an audit of a dense answer small, though the endpoint takes batches of 200.
    asked = []

    def receipts(client, blocks, *args):
        asked.append(blocks)
        return logs_to_table([], 1, False)

    mocker.patch("pipeline.verify.auditor.receipts_table", receipts)
    auditor = Auditor(mocker.Mock(), mocker.Mock(spec=Sources), Ledger(["a"], 0.0), mocker.Mock(),
                      mocker.Mock(), random.Random(0))  # fmt: skip
    endpoint = source()
    endpoint.batches.size = 200
    auditor._receipts_from(endpoint, list(range(1, 21)))
    assert asked == [list(range(1, 9)), list(range(9, 17)), list(range(17, 21))]
    assert max(map(len, asked)) == RECEIPT_BATCH


@pytest.mark.parametrize("strikes", [0, 1])
def test_with_its_rps_share_booked_only_a_trusted_endpoints_audit_is_skipped(mocker, strikes):
    ledger = Ledger(["a", "b"], audit_rate=1.0)
    for _ in range(NEW_AUDITS):
        ledger.audit_due("a")  # a is trusted now ...
    for _ in range(strikes):
        ledger.strike("a")  # ... or, with a strike, suspect
    other = mocker.Mock(spec=Source, has_receipts=False)
    other.name = "b"
    other.room.return_value = 0  # its share of --rps is booked
    other.ask.side_effect = lambda calls, request: logs_to_table([], 1, False)
    sources = mocker.Mock(spec=Sources)
    sources.pick.return_value = other
    auditor = Auditor(mocker.Mock(), sources, ledger, mocker.Mock(), mocker.Mock(),
                      random.Random(0))  # fmt: skip
    answer = table([log(101, 0)])
    batch = FetchedBatch(Task(7, 100, 104), "a", "unused", answer.num_rows)
    verdict = auditor.audit(batch, answer, [])
    assert other.ask.called == bool(strikes)  # a suspect's answer waits for its audit ...
    assert verdict.ok != bool(strikes)  # ... which sees the log the other endpoint lacks


def test_block_hashes_gives_each_block_with_logs_its_hash_in_any_row_order():
    logs = [log(101, 0), log(101, 1), log(103, 0), log(104, 0), log(104, 1)]
    expected = {101: block_hash(101), 103: block_hash(103), 104: block_hash(104)}
    assert block_hashes(table(logs)) == expected
    assert block_hashes(table(logs[::-1])) == expected
    assert block_hashes(table(logs), range(102, 104)) == {103: block_hash(103)}
    assert block_hashes(table([])) == {}
