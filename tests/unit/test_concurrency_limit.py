"""The adaptive requests-in-flight limit of one endpoint (fetch/concurrency.py)."""

from __future__ import annotations

import threading

import pytest

from pipeline.fetch import concurrency
from pipeline.fetch.concurrency import ConcurrencyLimit


@pytest.fixture(autouse=True)
def rounds_of_any_length(monkeypatch):
    """Rounds judged by their answers alone: these tests take no time."""
    monkeypatch.setattr(concurrency, "ROUND_S", 0.0)


def answer_rounds(
    limit: ConcurrencyLimit, rounds: int, latency: float, fill: bool = True, rows: int = 100
) -> None:
    """`rounds` rounds of answers of `latency` seconds, with every slot on the wire at once
    (`fill`) or one request at a time."""
    for _ in range(rounds):
        size = max(4, limit.limit)
        on_wire = size if fill else 1
        for _ in range(size // on_wire):
            answered = [limit.sending() for _ in range(on_wire)]
            for done in answered:
                done()
                limit.on_answer(latency, rows=rows)


def test_an_adaptive_limit_starts_at_one_request_in_flight():
    assert ConcurrencyLimit(None, ceiling=8).limit == 1


def test_a_pinned_limit_never_moves():
    limit = ConcurrencyLimit(3, ceiling=8)
    answer_rounds(limit, 10, latency=0.05)
    limit.on_congestion(throttled=True)
    assert limit.limit == 3


def test_rounds_that_fill_every_slot_at_steady_latency_raise_the_limit_to_the_ceiling():
    changes: list[int] = []
    limit = ConcurrencyLimit(None, ceiling=5, on_change=changes.append)
    answer_rounds(limit, 20, latency=0.05)
    assert limit.limit == 5
    assert changes == [2, 3, 4, 5]


def test_rounds_that_leave_slots_unused_keep_the_limit():
    limit = ConcurrencyLimit(None, ceiling=8)
    answer_rounds(limit, 3, latency=0.05)  # grows while it fills its slots ...
    grown = limit.limit
    answer_rounds(limit, 10, latency=0.05, fill=False)  # ... then paced: one on the wire
    assert limit.limit == grown


def test_answers_slowing_down_as_the_limit_grows_step_it_back_down():
    limit = ConcurrencyLimit(None, ceiling=8)
    answer_rounds(limit, 3, latency=0.05)
    before = limit.limit
    answer_rounds(limit, 1, latency=0.05 * 3)  # queueing at the endpoint
    assert limit.limit == before - 1


def test_bigger_answers_taking_longer_are_not_read_as_queueing():
    limit = ConcurrencyLimit(None, ceiling=8)
    answer_rounds(limit, 3, latency=0.05)
    before = limit.limit
    answer_rounds(limit, 1, latency=0.05 * 5, rows=10_000)  # 100x the logs, 5x the time
    assert limit.limit == before + 1


def test_congestion_halves_the_limit_once_per_round():
    limit = ConcurrencyLimit(None, ceiling=16)
    answer_rounds(limit, 7, latency=0.05)
    assert limit.limit == 8
    for _ in range(8):  # every request in flight failed together
        limit.on_congestion(throttled=False)
    assert limit.limit == 4
    answer_rounds(limit, 20, latency=0.05)
    assert limit.limit == 16  # timeouts and 5xx pass: the limit grows again


def test_after_a_throttle_the_limit_never_again_reaches_where_it_was_refused():
    limit = ConcurrencyLimit(None, ceiling=16)
    answer_rounds(limit, 5, latency=0.05)
    assert limit.limit == 6
    limit.on_congestion(throttled=True)
    assert limit.limit == 3
    answer_rounds(limit, 20, latency=0.05)
    assert limit.limit == 5


def test_a_round_spans_half_a_second_at_least(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(concurrency, "ROUND_S", 0.5)
    limit = ConcurrencyLimit(None, ceiling=8, clock=lambda: now[0])
    answer_rounds(limit, 5, latency=0.01)  # fast answers, in no time: still one round
    assert limit.limit == 1
    now[0] = 0.6
    answer_rounds(limit, 1, latency=0.01)
    assert limit.limit == 2


def test_close_wakes_the_threads_waiting_for_a_slot():
    limit = ConcurrencyLimit(None, ceiling=4)
    assert limit.acquire()
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(limit.acquire()))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()  # the one slot is taken
    limit.close()
    waiter.join(2)
    assert results == [False]


def test_a_raised_limit_lets_a_waiting_thread_in():
    limit = ConcurrencyLimit(None, ceiling=4)
    assert limit.acquire()
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(limit.acquire()))
    waiter.start()
    answer_rounds(limit, 1, latency=0.05)  # the round fills the one slot: the limit becomes 2
    waiter.join(2)
    assert results == [True]
