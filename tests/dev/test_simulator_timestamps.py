"""The simulator's block-timestamp profiles and batch limits, in front of the real node: logs
without blockTimestamp, with wrong ones, and batches refused over a size."""

from __future__ import annotations

import requests

from pipeline.dev.simulator import PROFILES, Profile
from pipeline.dev.simulator.stamps import FAKE_SHIFT_S


def post(url: str, payload: object) -> object:
    return requests.post(url, json=payload, timeout=10).json()


def get_logs(start: int, end: int, id_: int = 1) -> dict:
    params = [{"fromBlock": hex(start), "toBlock": hex(end)}]
    return {"jsonrpc": "2.0", "id": id_, "method": "eth_getLogs", "params": params}


def header(block: int, id_: int = 1) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": id_,
        "method": "eth_getBlockByNumber",
        "params": [hex(block), False],
    }


def without_timestamp(log: dict) -> dict:
    return {k: v for k, v in log.items() if k != "blockTimestamp"}


def test_stripped_logs_have_no_block_timestamp_and_are_counted(node, seeded, proxy):
    served = proxy(PROFILES["no-block-timestamp"])
    logs = post(served.url, get_logs(1, 20))["result"]
    direct = post(node.url, get_logs(1, 20))["result"]
    assert logs and all("blockTimestamp" in log for log in direct)
    assert logs == list(map(without_timestamp, direct))
    stats = served.stats()
    assert stats["block_timestamps"] == {"stripped": len(logs), "faked": 0, "zeroed": 0}
    assert stats["header_blocks"] == {} and stats["refused_batches"] == 0


def test_faked_timestamps_are_an_hour_late_or_zero(node, seeded, proxy):
    served = proxy(PROFILES["wrong-block-timestamp"])
    logs = post(served.url, get_logs(1, 60))["result"]
    direct = post(node.url, get_logs(1, 60))["result"]
    shifts = [
        int(a["blockTimestamp"], 16) - int(b["blockTimestamp"], 16)
        for a, b in zip(logs, direct, strict=True)
    ]
    zeroed = [a["blockTimestamp"] == "0x0" for a in logs]
    assert all(shift == FAKE_SHIFT_S or zero for shift, zero in zip(shifts, zeroed, strict=True))
    counts = served.stats()["block_timestamps"]
    assert counts == {"stripped": 0, "faked": zeroed.count(False), "zeroed": zeroed.count(True)}
    assert 0 < counts["zeroed"] < counts["faked"]
    assert list(map(without_timestamp, logs)) == list(map(without_timestamp, direct))


def test_no_batches_refuses_any_batch_with_one_error_object_and_answers_single_calls(
    node, seeded, proxy
):
    served = proxy(PROFILES["no-batches"])
    refused = post(served.url, [header(5, 0), header(6, 1)])
    assert isinstance(refused, dict) and refused["error"]["code"] == -32600
    assert "batch" in refused["error"]["message"]
    assert post(served.url, header(5))["result"]["number"] == "0x5"
    stats = served.stats()
    assert stats["refused_batches"] == 1 and stats["header_blocks"] == {5: 2, 6: 1}


def test_a_batch_limit_refuses_bigger_batches_call_by_call(node, seeded, proxy):
    served = proxy(Profile(batch_limit=2))
    answers = post(served.url, [header(5, 0), header(6, 1)])
    assert [a["result"]["number"] for a in answers] == ["0x5", "0x6"]
    refused = post(served.url, [header(5, 0), header(6, 1), header(7, 2)])
    assert [a["id"] for a in refused] == [0, 1, 2]
    assert all("Batch of more than 2" in a["error"]["message"] for a in refused)
    assert served.stats()["refused_batches"] == 1
    assert "block_timestamps" in served.stats()


def test_profiles_without_these_faults_keep_their_stats_as_they_were(node, seeded, proxy):
    served = proxy(PROFILES["healthy"])
    post(served.url, [header(5, 0), header(6, 1)])
    assert not {"block_timestamps", "header_blocks", "refused_batches"} & served.stats().keys()
