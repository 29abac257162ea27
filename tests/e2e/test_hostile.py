"""Hostile answers, end to end: an endpoint that answers eth_getLogs with quantities past 64 bits,
negative or non-hex numbers, wrong JSON types, 10,000-deep nesting, bad hashes and odd data
costs its requests, never a worker, and never a wrong row."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from conftest import backfill
from helpers import assert_equals_node

from pipeline.dev.simulator import MUTATIONS, FaultProxy, Outcome, Profile, Reply, RpcRequest
from pipeline.errors import ErrorKind
from pipeline.messages import Notice, WorkerStarted

CHUNK = 4
GATE_S = 2.5  # at most, per honest answer, until the hostile endpoint has served every kind


class Gated(FaultProxy):
    """An honest endpoint that answers slowly until `until()` holds: so that the hostile one
    next to it gets enough requests to serve every kind, however fast the machine is."""

    def __init__(self, upstream: str, until: Callable[[], bool]) -> None:
        super().__init__(upstream, Profile("honest"))
        self._until = until
        self._opened = threading.Event()

    def _handle(self, request: RpcRequest, forward: Callable[[bytes], Reply]) -> Outcome:
        # Hold each answer until the hostile endpoint has served every kind (checked every
        # 50 ms), but never near the client's 5 s timeout: the honest endpoint must not fail.
        deadline = time.monotonic() + GATE_S
        while not self._opened.is_set() and time.monotonic() < deadline:
            if self._until():
                self._opened.set()
            else:
                self._opened.wait(0.05)
        return super()._handle(request, forward)


def served(proxy: FaultProxy) -> dict[str, int]:
    return proxy.stats()["hostile"]


def assert_no_worker_died(events: list, names: list[str]) -> None:
    died = [e.text for e in events if isinstance(e, Notice) and "died" in e.text]
    assert died == []
    started = Counter(e.endpoint for e in events if isinstance(e, WorkerStarted))
    assert started == Counter(names)  # one worker per endpoint, never restarted


def malformed(result, name: str) -> int:
    entry = next(e for e in result.summary["endpoints"] if e["name"] == name)
    return entry["errors"].get(ErrorKind.MALFORMED.value, 0)


@pytest.mark.slow
def test_hostile_answers_next_to_an_honest_endpoint_kill_no_worker_and_lose_no_log(
    tmp_path, node, seeded, proxy
):
    hostile = proxy(Profile("hostile", hostile_rate=0.5, seed=11))

    def covered() -> bool:
        return set(served(hostile)) == set(MUTATIONS)

    events: list = []
    first, last = seeded.first_block, seeded.first_block + 799  # 200 tasks
    with Gated(node.url, covered) as honest:
        result = backfill(
            tmp_path,
            [f"hostile={hostile.url}", f"honest={honest.url}"],
            events.append,
            from_block=first,
            to_block=last,
            chunk_size=CHUNK,
            stall_timeout=60.0,
            # The gate holds the checks' requests to the honest endpoint too (their headers and
            # audits), which only makes this run slow; the hostile one alone is checked below.
            verify=False,
        )
    kinds = served(hostile)
    print(f"hostile answers served, by kind: {dict(sorted(kinds.items()))}")
    assert_no_worker_died(events, ["hostile", "honest"])
    assert set(kinds) == set(MUTATIONS), kinds
    assert malformed(result, "hostile") >= sum(kinds.values())
    assert_equals_node(result, tmp_path, node, first, last)


@pytest.mark.slow
def test_a_hostile_endpoint_alone_still_ends_exact_once_its_retries_succeed(
    tmp_path, node, seeded, proxy
):
    hostile = proxy(Profile("hostile", hostile_rate=0.3, seed=17))
    events: list = []
    first, last = seeded.first_block, seeded.first_block + 299
    result = backfill(
        tmp_path,
        [f"hostile={hostile.url}"],
        events.append,
        from_block=first,
        to_block=last,
        chunk_size=10,
        stall_timeout=60.0,
    )
    kinds = served(hostile)
    print(f"hostile answers served, by kind: {dict(sorted(kinds.items()))}")
    assert_no_worker_died(events, ["hostile"])
    # One worker in one thread: the same answers are spoiled the same way on every run.
    assert "quantity_out_of_range" in kinds and sum(kinds.values()) >= 5, kinds
    assert malformed(result, "hostile") >= sum(kinds.values())
    assert_equals_node(result, tmp_path, node, first, last)
