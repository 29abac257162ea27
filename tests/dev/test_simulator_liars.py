"""The simulator's liars, in front of the real seeded node: eth_getLogs answers that are wrong
with HTTP 200 and no error (behind, drops, blanks, orphans, truncates, fabricates), each counted."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
import requests

from pipeline.dev.providers import LIARS
from pipeline.dev.simulator import PROFILES, FaultProxy, Profile, orphan_hash
from pipeline.dev.simulator.liars import Liars

DEAD = "0x000000000000000000000000000000000000dead"
SAMPLED = ("drops", "blanks", "orphans", "truncates", "fabricates")


def post(url: str, payload: object) -> object:
    response = requests.post(url, json=payload, timeout=10)
    assert response.status_code == 200
    return response.json()


def rpc(method: str, params: list, id_: int = 1) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}


def get_logs(start: int | str, end: int | str, id_: int = 1, address: str | None = None) -> dict:
    query = {"fromBlock": hex(start) if isinstance(start, int) else start}
    query["toBlock"] = hex(end) if isinstance(end, int) else end
    if address is not None:
        query["address"] = address
    return rpc("eth_getLogs", [query], id_)


def header(block: int | str, id_: int = 1) -> dict:
    return rpc(
        "eth_getBlockByNumber", [hex(block) if isinstance(block, int) else block, False], id_
    )


def receipts(block: int, id_: int = 1) -> dict:
    return rpc("eth_getBlockReceipts", [hex(block)], id_)


def head_of(url: str) -> int:
    return int(post(url, rpc("eth_blockNumber", []))["result"], 16)


def logs(url: str, *args, **kwargs) -> list[dict]:
    answer = post(url, get_logs(*args, **kwargs))
    assert "error" not in answer
    return answer["result"]


def block_of(log: dict) -> int:
    return int(log["blockNumber"], 16)


def key(log: dict) -> tuple[int, int]:
    return block_of(log), int(log["logIndex"], 16)


def no_lies() -> dict[str, int]:
    return dict.fromkeys(LIARS, 0)


# --- behind --------------------------------------------------------------------------------------


def test_behind_reports_the_true_head_but_serves_logs_from_40_blocks_back(node, seeded, proxy):
    served = proxy(PROFILES["liar-behind"])
    head = head_of(node.url)
    lagging = head - 40
    assert head_of(served.url) == head  # the up-to-date backend answers the head
    assert post(served.url, header("latest"))["result"]["number"] == hex(head)
    # Over the last 40 blocks (and anything reaching into them): [] with no error.
    assert logs(node.url, lagging + 1, head) and logs(served.url, lagging + 1, head) == []
    assert logs(served.url, head - 100, "latest") == []  # the tag means the true head
    assert logs(node.url, head - 100, head)
    # Below its head it tells the truth.
    assert logs(served.url, lagging - 10, lagging) == logs(node.url, lagging - 10, lagging)
    # Headers and receipts of blocks it lacks: null, in a plain request and in a batch.
    assert post(served.url, header(head))["result"] is None
    assert post(served.url, receipts(head))["result"] is None
    batch = post(served.url, [header(head, 0), header(lagging, 1)])
    assert batch[0]["result"] is None
    assert batch[1]["result"] == post(node.url, header(lagging))["result"]
    assert post(served.url, receipts(lagging)) == post(node.url, receipts(lagging))
    # A block past the true head is null from anyone: no lie.
    assert post(served.url, header(head + 5))["result"] is None
    assert served.stats()["lies"] == {**no_lies(), "behind": 2 + 3}


def test_behind_split_cuts_logs_and_answers_batched_headers_from_the_true_head(node, seeded, proxy):
    served = proxy(PROFILES["liar-behind-split"])
    head = head_of(node.url)
    lagging = head - 40
    assert head_of(served.url) == head
    honest = logs(node.url, head - 99, head)
    partial = logs(served.url, head - 99, head)
    assert partial == [log for log in honest if block_of(log) <= lagging]
    assert len(partial) < len(honest)
    # A plain request reaches the lagging backend; a batch is split: headers from the true head.
    assert post(served.url, header(head))["result"] is None
    batch = post(served.url, [header(head, 0), get_logs(lagging + 1, head, 1), receipts(head, 2)])
    assert batch[0]["result"] == post(node.url, header(head))["result"]
    assert batch[1]["result"] == []
    assert batch[2]["result"] == post(node.url, receipts(head))["result"]
    assert served.stats()["lies"] == {**no_lies(), "behind": 3}


# --- the sampled lies ----------------------------------------------------------------------------


def always(kind: str) -> Profile:
    return Profile(f"always-{kind}", liar=kind, liar_rate=1.0, seed=3)


def test_drops_leaves_out_one_log_whose_block_keeps_others(node, seeded, proxy):
    served = proxy(always("drops"))
    first = seeded.first_block
    honest, lie = logs(node.url, first, first + 4), logs(served.url, first, first + 4)
    assert len(lie) == len(honest) - 1
    (missing,) = [log for log in honest if log not in lie]
    assert lie == [log for log in honest if log != missing]
    assert any(block_of(log) == block_of(missing) for log in lie)  # a bloom cannot tell
    assert served.stats()["lies"] == {**no_lies(), "drops": 1}


def test_blanks_leaves_out_every_log_of_one_block(node, seeded, proxy):
    served = proxy(always("blanks"))
    first = seeded.first_block
    honest, lie = logs(node.url, first, first + 9), logs(served.url, first, first + 9)
    (blank,) = {block_of(log) for log in honest} - {block_of(log) for log in lie}
    assert lie == [log for log in honest if block_of(log) != blank]
    assert served.stats()["lies"] == {**no_lies(), "blanks": 1}


def test_a_liar_after_n_answers_is_honest_for_those_then_lies(node, seeded, proxy):
    served = proxy(replace(always("drops"), liar_after=2))
    first = seeded.first_block
    honest = logs(node.url, first, first + 4)
    answers = [logs(served.url, first, first + 4) for _ in range(3)]
    assert answers[0] == honest and answers[1] == honest
    assert len(answers[2]) == len(honest) - 1
    assert served.stats()["lies"] == {**no_lies(), "drops": 1}


def test_orphans_give_one_blocks_logs_an_orphaned_hash_and_leave_headers_honest(
    node, seeded, proxy
):
    served = proxy(always("orphans"))
    first = seeded.first_block
    honest, lie = logs(node.url, first, first + 4), logs(served.url, first, first + 4)
    changed = [(a, b) for a, b in zip(honest, lie, strict=True) if a != b]
    (block,) = {block_of(a) for a, _ in changed}
    assert len(changed) == sum(block_of(log) == block for log in honest)  # all of that block's
    for real, orphaned in changed:
        assert orphaned == {**real, "blockHash": orphan_hash(real["blockHash"])}
        assert len(orphaned["blockHash"]) == 66 and orphaned["blockHash"] != real["blockHash"]
    assert post(served.url, header(block)) == post(node.url, header(block))
    assert post(served.url, receipts(block)) == post(node.url, receipts(block))
    assert served.stats()["lies"] == {**no_lies(), "orphans": 1}


def test_truncates_cuts_the_answer_to_the_logs_of_its_first_blocks(node, seeded, proxy):
    served = proxy(always("truncates"))
    first = seeded.first_block
    honest, lie = logs(node.url, first, first + 5), logs(served.url, first, first + 5)
    assert 0 < len(lie) < len(honest) and lie == honest[: len(lie)]
    assert {block_of(log) for log in lie} == set(sorted({block_of(log) for log in honest})[:3])
    one = logs(served.url, first, first)  # a single block: the first half of its logs
    assert one == logs(node.url, first, first)[: len(one)] and one
    assert served.stats()["lies"] == {**no_lies(), "truncates": 2}


@pytest.mark.parametrize("filtered", [False, True])
def test_fabricates_adds_a_log_that_matches_the_filter_but_not_the_bloom(
    node, seeded, proxy, filtered
):
    served = proxy(always("fabricates"))
    first, address = seeded.first_block, seeded.contracts[0] if filtered else None
    honest = logs(node.url, first, first + 4, address=address)
    lie = logs(served.url, first, first + 4, address=address)
    assert len(lie) == len(honest) + 1
    (fake,) = [log for log in lie if log not in honest]
    assert [log for log in lie if log is not fake] == honest
    assert [key(log) for log in lie] == sorted(key(log) for log in lie)
    whole_block = logs(node.url, block_of(fake), block_of(fake))
    assert int(fake["logIndex"], 16) == max(int(log["logIndex"], 16) for log in whole_block) + 1
    assert fake["topics"][0] not in {t for log in whole_block for t in log["topics"]}
    assert len(fake["topics"][0]) == 66
    if filtered:
        assert fake["address"].lower() == address.lower()
    assert served.stats()["lies"] == {**no_lies(), "fabricates": 1}


@pytest.mark.parametrize("kind", SAMPLED)
def test_each_named_liar_lies_in_a_seeded_share_and_the_same_seed_tells_the_same_lies(
    node, seeded, proxy, kind
):
    profile = PROFILES[f"liar-{kind}"]
    assert profile.liar == kind and profile.liar_rate == 0.2
    ranges = [(b, b + 2) for b in range(seeded.first_block, seeded.first_block + 60, 3)]
    honest = [logs(node.url, a, b) for a, b in ranges]
    runs = []
    for _ in range(2):
        served = proxy(profile)
        answers = [logs(served.url, a, b) for a, b in ranges]
        lies = served.stats()["lies"]
        runs.append((answers, lies))
        assert lies == {
            **no_lies(),
            kind: sum(a != h for a, h in zip(answers, honest, strict=True)),
        }
        assert 0 < lies[kind] < len(ranges)
        outcomes = Counter(outcome for *_, outcome in served.stats()["get_logs"])
        assert outcomes == {"lied": lies[kind], "ok": len(ranges) - lies[kind]}
    assert runs[0] == runs[1]
    # Headers, receipts and the head stay honest.
    block = seeded.first_block
    assert post(served.url, header(block)) == post(node.url, header(block))
    assert post(served.url, receipts(block)) == post(node.url, receipts(block))
    assert head_of(served.url) == head_of(node.url)


def test_honest_profiles_count_no_lies(node, seeded, proxy):
    served = proxy(PROFILES["healthy"])
    first = seeded.first_block
    assert logs(served.url, first, first + 4) == logs(node.url, first, first + 4)
    assert served.stats()["lies"] == no_lies()


def test_a_liar_answers_every_call_of_a_batch_on_its_own(node, seeded, proxy):
    served = proxy(always("drops"))
    first = seeded.first_block
    batch = post(served.url, [get_logs(first, first + 1, 0), get_logs(first + 2, first + 3, 1)])
    assert [a["id"] for a in batch] == [0, 1]
    for answer, (a, b) in zip(batch, [(first, first + 1), (first + 2, first + 3)], strict=True):
        assert len(answer["result"]) == len(logs(node.url, a, b)) - 1
    assert served.stats()["lies"]["drops"] == 2


@pytest.mark.parametrize(
    "fields",
    [
        {"liar": "sometimes"},
        {"liar": "behind", "liar_behind_mode": "sideways"},
        {"liar": "drops", "liar_rate": 1.5},
        {"liar": "behind", "liar_lag": -1},
        {"liar": "drops", "liar_after": -1},
    ],
)
def test_a_bad_liar_profile_is_refused(node, fields):
    with pytest.raises(ValueError):
        FaultProxy(node.url, Profile(**fields))


def test_liars_counts_list_every_kind():
    assert Liars(Profile()).counts() == no_lies()
    assert not Liars(Profile()).active and Liars(Profile(liar="behind")).behind
