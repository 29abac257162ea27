"""Real provider behaviours, simulated in front of the real anvil node: caps, hints, throttling,
quotas, lagging heads. Every run must store exactly the node's logs, and behave as it should."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from conftest import backfill, get_logs, node_rows, stored_rows

from pipeline.dev.simulator import PROFILES, FaultProxy, Profile
from pipeline.messages import Split

FIRST, LAST = 1, 1000  # ~20,000 logs of the seeded node
CHUNK = 200


def run(tmp_path, node, urls, events=None, **kwargs):
    """Backfill FIRST..LAST through `urls`; return the result (events collected if a list)."""
    report = events.append if events is not None else (lambda event: None)
    kwargs = {"chunk_size": CHUNK, "from_block": FIRST, "to_block": LAST, **kwargs}
    return backfill(tmp_path, urls, report, **kwargs)


def assert_exact(result, tmp_path, node):
    assert result.exit_code == 0, result.message
    assert result.summary["failed_ranges"] == [] and result.summary["unfetched_ranges"] == []
    assert stored_rows(tmp_path) == node_rows(node, FIRST, LAST)


def endpoint(result, name):
    return next(e for e in result.summary["endpoints"] if e["name"] == name)


# Profiles an endpoint cannot finish a backfill with on its own: it goes out, lacks blocks, or
# (hangs) only gets slow. With a healthy endpoint next to it, none may lose a log.
CANNOT_FINISH_ALONE = {
    "dead", "dies-mid-run", "billing", "billing-rpc", "unauthorized", "pruned", "lagging",
    "lagging-partial", "hangs",
}  # fmt: skip
ALONE = sorted(set(PROFILES) - CANNOT_FINISH_ALONE)


@pytest.mark.parametrize("name", ALONE)
def test_alone_each_provider_profile_gives_exactly_the_nodes_logs(tmp_path, node, seeded, name):
    with FaultProxy(node.url, PROFILES[name]) as proxy:
        result = run(tmp_path, node, [f"{name}={proxy.url}"], timeout=3.0)
    assert_exact(result, tmp_path, node)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_mixed_with_a_healthy_endpoint_each_profile_loses_nothing(tmp_path, node, seeded, name):
    with FaultProxy(node.url, PROFILES[name]) as odd, FaultProxy(node.url) as healthy:
        result = run(tmp_path, node, [f"{name}={odd.url}", f"healthy={healthy.url}"], timeout=3.0)
    assert_exact(result, tmp_path, node)


@pytest.mark.parametrize("name", ["dies-mid-run", "billing", "billing-rpc", "pruned"])
def test_alone_an_endpoint_that_cannot_finish_exits_1_and_stores_only_whole_ranges(
    tmp_path, node, seeded, name
):
    with FaultProxy(node.url, PROFILES[name]) as proxy:
        result = run(tmp_path, node, [f"{name}={proxy.url}"], chunk_size=10, stall_timeout=5.0)
    assert result.exit_code == 1, result.message
    missing = result.summary["failed_ranges"] + result.summary["unfetched_ranges"]
    assert missing
    lost = lambda block: any(r["from_block"] <= block <= r["to_block"] for r in missing)  # noqa: E731
    assert stored_rows(tmp_path) == [r for r in node_rows(node, FIRST, LAST) if not lost(r[0])]


def test_splits_happen_where_the_providers_hint_says(tmp_path, node, seeded):
    events: list = []
    with FaultProxy(node.url, PROFILES["result-cap"]) as proxy:
        result = run(tmp_path, node, [f"capped={proxy.url}"], events)
        cap = proxy.profile.result_cap
        refused = [(a, b) for a, b, outcome in proxy.stats()["get_logs"] if outcome == "result_cap"]
    assert_exact(result, tmp_path, node)
    splits = [e for e in events if isinstance(e, Split)]
    assert splits and len(splits) == len(refused) == endpoint(result, "capped")["splits"]
    blocks = [row[0] for row in node_rows(node, FIRST, LAST)]
    for split in splits:
        # The proxy's hint is the longest prefix of the range with at most `cap` logs.
        start = split.task.start
        fits = sum(start <= b <= split.at for b in blocks)
        assert fits <= cap < fits + blocks.count(split.at + 1), split


@pytest.mark.parametrize("name", ["hint-echo", "hint-inverted", "hint-outside"])
def test_a_bad_hint_is_ignored_and_the_range_halved(tmp_path, node, seeded, name):
    events: list = []
    with FaultProxy(node.url, PROFILES[name]) as proxy:
        result = run(tmp_path, node, [f"{name}={proxy.url}"], events)
    assert_exact(result, tmp_path, node)
    splits = [e for e in events if isinstance(e, Split)]
    assert splits
    for split in splits:
        assert split.at == split.task.start + split.task.blocks // 2 - 1


def test_a_block_with_more_logs_than_the_cap_is_read_from_its_receipts(tmp_path, node, seeded):
    with FaultProxy(node.url, PROFILES["tiny-result-cap"]) as proxy:
        result = run(tmp_path, node, [f"tiny={proxy.url}"], to_block=FIRST + 49)
        methods = proxy.stats()["methods"]
    assert result.exit_code == 0, result.message
    assert stored_rows(tmp_path) == node_rows(node, FIRST, FIRST + 49)
    assert methods.get("eth_getBlockReceipts", 0) > 0


def test_with_rps_an_endpoint_stays_at_or_under_its_limit(tmp_path, node, seeded):
    with FaultProxy(node.url, replace(PROFILES["rate-limited"], rps_cap=40)) as proxy:
        result = run(
            tmp_path, node, [proxy.url], rps=20, concurrency=4, chunk_size=50, to_block=FIRST + 599
        )
        stats = proxy.stats()
    assert result.exit_code == 0, result.message
    assert stats["throttled"] == 0
    times = sorted(stats["request_times"])
    busiest = max(sum(t <= u < t + 1.0 for u in times) for t in times)
    assert busiest <= 21, busiest  # 20 per second, plus the request that opens the window


def test_without_rps_a_throttling_endpoint_is_slowed_down_not_hammered(tmp_path, node, seeded):
    with FaultProxy(node.url, PROFILES["rate-limited-bare"]) as proxy:
        result = run(tmp_path, node, [proxy.url], concurrency=4, chunk_size=50)
        stats = proxy.stats()
    assert_exact(result, tmp_path, node)
    assert stats["throttled"] < 0.3 * stats["requests"], stats["throttled"]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_quarantined_endpoint_gets_no_more_requests(tmp_path, node, seeded, concurrency):
    billing = PROFILES["billing"]
    with FaultProxy(node.url, billing) as billed, FaultProxy(node.url) as healthy:
        urls = [f"billed={billed.url}", f"healthy={healthy.url}"]
        # Small tasks: enough requests to use up the quota.
        result = run(tmp_path, node, urls, chunk_size=10, concurrency=concurrency)
        requests = billed.stats()["requests"]
    assert_exact(result, tmp_path, node)
    # Only the requests in flight when the first "capacity exceeded" came back may follow it.
    assert billing.quota_after < requests <= billing.quota_after + concurrency
    billed_stats = endpoint(result, "billed")
    assert billed_stats["state"] == "out" and "quota" in billed_stats["out_reason"]


def test_when_every_endpoint_is_out_the_run_ends_with_exit_1_and_the_ranges(tmp_path, node, seeded):
    with (
        FaultProxy(node.url, PROFILES["billing"]) as billed,
        FaultProxy(node.url, PROFILES["unauthorized"]) as denied,
    ):
        result = run(
            tmp_path, node, [f"billed={billed.url}", f"denied={denied.url}"], chunk_size=10
        )
    assert result.exit_code == 1
    assert "every endpoint is out of service" in result.message
    assert result.summary["failed_ranges"] or result.summary["unfetched_ranges"]
    assert endpoint(result, "billed")["out_reason"]


@pytest.mark.parametrize("name", ["lagging", "lagging-partial"])
def test_a_lagging_endpoint_is_never_asked_beyond_its_head(tmp_path, node, seeded, name):
    profile = PROFILES[name]
    with FaultProxy(node.url, profile) as lagging, FaultProxy(node.url) as healthy:
        head = int(node.rpc("eth_blockNumber", []), 16)
        result = run(
            tmp_path, node, [f"lagging={lagging.url}", f"healthy={healthy.url}"], to_block=head
        )
        asked = lagging.stats()["get_logs"]
    assert result.exit_code == 0, result.message
    assert stored_rows(tmp_path) == node_rows(node, FIRST, head)
    assert asked and max(b for _, b, _ in asked) <= head - profile.lag_blocks


def test_a_pruned_endpoint_alone_reports_the_ranges_it_cannot_serve(tmp_path, node, seeded):
    with FaultProxy(node.url, PROFILES["pruned"]) as pruned:
        result = run(tmp_path, node, [f"pruned={pruned.url}"])
    assert result.exit_code == 1
    failed = result.summary["failed_ranges"]
    assert failed[0]["from_block"] == FIRST and "pruned" in failed[0]["error"]


def test_an_answer_that_trickles_in_times_out_as_a_whole(node, seeded):
    from pipeline.config.endpoints import parse_endpoints
    from pipeline.errors import ErrorKind, RpcError
    from pipeline.fetch.rpc import RpcClient

    trickling = Profile("trickling", failure_rate=1.0, failure_kinds=("trickle",))
    with FaultProxy(node.url, trickling) as proxy:
        client = RpcClient(parse_endpoints([proxy.url])[0], timeout=1.0)
        started = time.monotonic()
        with pytest.raises(RpcError) as caught:
            get_logs(client, {"fromBlock": hex(FIRST), "toBlock": hex(FIRST + 9)})
        assert caught.value.kind is ErrorKind.TIMEOUT
        assert time.monotonic() - started < 3.0  # the timeout plus at most one read
