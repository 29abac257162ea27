"""End to end, with default flags: each endpoint finds its own number of requests in flight, from
one, and stays polite to an endpoint that throttles; --concurrency pins it."""

from __future__ import annotations

from conftest import backfill
from helpers import assert_equals_node

from pipeline.dev.simulator import Profile

BLOCKS = 400  # of the seeded node: 5-block tasks, 80 of them, enough rounds to grow


def window(seeded) -> tuple[int, int]:
    return seeded.first_block, seeded.first_block + BLOCKS - 1


def test_a_latency_bound_endpoint_gets_more_requests_in_flight_by_default(
    tmp_path, node, seeded, proxy
):
    slow = proxy(Profile("slow", latency_ms=(40, 50), seed=1))
    start, end = window(seeded)
    result = backfill(tmp_path, [slow.url], from_block=start, to_block=end, chunk_size=5)
    assert_equals_node(result, tmp_path, node, start, end)
    (endpoint,) = result.summary["endpoints"]
    trace = endpoint["concurrency"]
    assert not trace["pinned"]
    assert trace["max"] >= 3, trace  # answers do not slow down as requests are added
    assert trace["changes"][0][1] == 2  # ... one step at a time, from one


def test_a_pinned_concurrency_never_moves(tmp_path, node, seeded, proxy):
    slow = proxy(Profile("slow", latency_ms=(40, 50), seed=1))
    start, end = window(seeded)
    result = backfill(
        tmp_path, [slow.url], from_block=start, to_block=end, chunk_size=5, concurrency=2
    )
    assert_equals_node(result, tmp_path, node, start, end)
    trace = result.summary["endpoints"][0]["concurrency"]
    assert trace["pinned"] and trace["max"] == trace["final"] == 2
    assert trace["changes"] == []


def test_a_throttling_endpoint_gets_no_more_refusals_than_one_request_at_a_time_would(
    tmp_path, node, seeded, proxy
):
    start, end = window(seeded)
    throttled = {}
    for label, pinned in (("one", 1), ("adaptive", None)):
        capped = proxy(Profile("capped", latency_ms=(5, 10), rps_cap=25, seed=2))
        result = backfill(
            tmp_path / label,
            [capped.url],
            from_block=start,
            to_block=end,
            chunk_size=5,
            concurrency=pinned,
        )
        assert_equals_node(result, tmp_path / label, node, start, end)
        throttled[label] = capped.stats()["throttled"]
        trace = result.summary["endpoints"][0]["concurrency"]
    assert throttled["one"] > 0, throttled  # the cap is within reach of one request at a time
    # The adaptive limit grows only while nothing refuses, and a refusal halves it: a few more
    # refusals at most than one request at a time (each costs a 1 s pause, so a few is slow).
    assert throttled["adaptive"] <= throttled["one"] + 3, throttled
    assert trace["final"] <= 2, trace


def test_max_concurrency_caps_the_adaptive_limit(tmp_path, node, seeded, proxy):
    slow = proxy(Profile("slow", latency_ms=(40, 50), seed=1))
    start, end = window(seeded)
    result = backfill(
        tmp_path, [slow.url], from_block=start, to_block=end, chunk_size=5, max_concurrency=2
    )
    assert_equals_node(result, tmp_path, node, start, end)
    trace = result.summary["endpoints"][0]["concurrency"]
    assert trace["max"] == 2, trace
