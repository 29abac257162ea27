"""Unit tests of the per-endpoint limits: pacing, circuit breaker, request window, split points."""

from __future__ import annotations

import random

import pytest

from pipeline.fetch.health import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from pipeline.fetch.ratecontrol import MIN_RPS, RETRY_AFTER_CAP_S, RETRY_AFTER_FLOOR_S, Throttle
from pipeline.fetch.window import GROW_AFTER, PROBE_AFTER, RangeWindow
from pipeline.messages import Task
from pipeline.plan.chunks import split_point


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_throttle_spaces_requests_at_the_configured_rate():
    clock = Clock()
    throttle = Throttle(rps=4, clock=clock)
    waits = [throttle.reserve() for _ in range(5)]
    assert waits == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])


def test_a_batch_takes_as_many_slots_as_it_holds_calls():
    clock = Clock()
    throttle = Throttle(rps=4, clock=clock)
    waits = [throttle.reserve(), throttle.reserve(calls=6), throttle.reserve()]
    assert waits == pytest.approx([0, 0.25, 1.75])  # the batch of 6 metered as 6 calls


def test_restoring_a_throttled_rate_goes_back_to_the_ceiling_and_brings_slots_closer():
    clock = Clock()
    paced = Throttle(rps=10, clock=clock)
    paced.limit(1.0)
    assert [paced.reserve() for _ in range(3)] == pytest.approx([0, 1, 2])
    assert paced.restore() == pytest.approx(0.1) and paced.rate == 10
    assert paced.reserve() == pytest.approx(0.3)  # 3 s ahead at 1 a second: 0.3 s at 10
    unpaced = Throttle(clock=clock)
    unpaced.limit(1.0)
    unpaced.reserve()
    unpaced.reserve()
    assert unpaced.restore() == 0 and unpaced.rate is None and unpaced.reserve() == 0
    assert Throttle(rps=10, clock=clock).restore() == 1  # nothing lowered it: unchanged


def test_unpaced_throttle_never_waits_until_throttled():
    throttle = Throttle(clock=Clock())
    assert [throttle.reserve() for _ in range(3)] == [0, 0, 0]


def test_throttling_halves_the_rate_and_pauses_as_long_as_asked():
    clock = Clock()
    throttle = Throttle(rps=10, clock=clock, rng=random.Random(1))
    pause = throttle.on_throttled(retry_after=3)
    assert throttle.rate == 5
    assert 3 <= pause <= 3.6 and throttle.paused_for() == pytest.approx(pause)
    assert throttle.reserve() == pytest.approx(pause)


def test_throttling_halves_the_rate_down_to_a_floor_at_most():
    clock = Clock()
    throttle = Throttle(rps=3, clock=clock, rng=random.Random(1))
    throttled_apart(throttle, clock, 1, floor=1.0)
    assert throttle.rate == 1.5
    throttled_apart(throttle, clock, 3, floor=1.0)
    assert throttle.rate == 1.0


def test_a_zero_retry_after_still_pauses_a_little_and_huge_ones_are_clamped():
    throttle = Throttle(clock=Clock(), rng=random.Random(2))
    assert throttle.on_throttled(retry_after=0) >= RETRY_AFTER_FLOOR_S
    assert throttle.on_throttled(retry_after=10_000) <= RETRY_AFTER_CAP_S


def test_an_unpaced_endpoint_that_throttles_gets_half_its_measured_rate():
    clock = Clock()
    throttle = Throttle(clock=clock)
    for _ in range(21):
        throttle.reserve()
        clock.now += 0.05  # 20 requests per second
    throttle.on_throttled(retry_after=None)
    assert throttle.rate == pytest.approx(10, rel=0.01)


def throttled_apart(throttle: Throttle, clock: Clock, times: int, floor: float = MIN_RPS) -> None:
    """`times` refusals, each after the pause the one before it asked for."""
    for _ in range(times):
        clock.now += throttle.on_throttled(retry_after=0, floor=floor) + 0.01


def test_rate_recovers_additively_after_sustained_success_up_to_the_ceiling():
    clock = Clock()
    throttle = Throttle(rps=10, clock=clock)
    throttled_apart(throttle, clock, 4)
    assert throttle.rate == pytest.approx(0.625)
    for _ in range(10):
        throttle.on_success()
    assert throttle.rate == pytest.approx(1.625)  # +10% of the ceiling
    for _ in range(1000):
        throttle.on_success()
    assert throttle.rate == 10


def test_rate_never_drops_below_the_floor():
    clock = Clock()
    throttle = Throttle(rps=1, clock=clock)
    throttled_apart(throttle, clock, 20)
    assert throttle.rate == MIN_RPS


def test_requests_refused_together_during_one_pause_cut_the_rate_once():
    clock = Clock()
    throttle = Throttle(rps=8, clock=clock)
    for _ in range(8):  # eight requests were in flight when the provider started refusing
        throttle.on_throttled(retry_after=1)
    assert throttle.rate == 4
    clock.now += 2  # after the pause, a new refusal is news
    throttle.on_throttled(retry_after=1)
    assert throttle.rate == 2


def test_failures_back_off_exponentially_and_success_resets():
    clock = Clock()
    throttle = Throttle(clock=clock, rng=random.Random(3))
    pauses = [throttle.on_failure() for _ in range(3)]
    assert [round(p) for p in pauses] == [1, 2, 4]
    throttle.on_success()
    assert throttle.on_failure() < 1.3


def test_breaker_opens_after_a_run_of_failures_and_half_opens_for_one_probe():
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=3, cooldown=10, clock=clock)
    assert [breaker.record_failure() for _ in range(3)] == [False, False, True]
    assert breaker.state == OPEN and breaker.admit() == pytest.approx(10)
    clock.now += 10
    assert breaker.admit() == 0 and breaker.state == HALF_OPEN
    assert breaker.admit() > 0  # only one probe at a time
    assert breaker.record_success() and breaker.state == CLOSED and breaker.admit() == 0


def test_a_failed_probe_reopens_the_breaker_for_twice_as_long():
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=1, cooldown=10, clock=clock)
    breaker.record_failure()
    clock.now += 10
    assert breaker.admit() == 0
    assert breaker.record_failure() and breaker.admit() == pytest.approx(20)


def test_a_released_probe_lets_the_next_request_probe():
    clock = Clock()
    breaker = CircuitBreaker(failures_to_open=1, cooldown=1, clock=clock)
    breaker.record_failure()
    clock.now += 1
    assert breaker.admit() == 0
    breaker.release()
    assert breaker.admit() == 0


def test_window_shrinks_to_what_should_fit_and_never_to_the_refused_width():
    window = RangeWindow()
    window.shrink(width=1000, fits=300, range_cap=False)
    assert window.limit == 300 and window.ceiling is None
    window.shrink(width=300, fits=300, range_cap=False)  # an echoed hint: still strictly smaller
    assert window.limit == 299


def test_window_grows_slowly_near_the_width_that_failed():
    window = RangeWindow()
    window.shrink(width=150, fits=100, range_cap=False)
    for _ in range(GROW_AFTER - 1):
        window.succeeded(100)
    window.succeeded(50)  # narrower requests say nothing about the limit
    assert window.limit == 100
    window.succeeded(100)
    assert window.limit == 125


def test_window_doubles_back_quickly_far_below_the_width_that_failed():
    window = RangeWindow()
    window.shrink(width=40, fits=2, range_cap=False)
    widths = []
    for _ in range(8):
        window.succeeded(window.limit)
        widths.append(window.limit)
    assert widths == [2, 4, 4, 8, 8, 16, 16, 32]


def test_one_overfull_block_does_not_shrink_the_window():
    window = RangeWindow(50)
    window.shrink(width=40, fits=1, range_cap=False)
    assert window.limit == 50


def test_window_stays_under_a_range_cap_but_probes_above_it_now_and_then():
    window = RangeWindow()
    window.shrink(width=150, fits=100, range_cap=True)
    for _ in range(PROBE_AFTER - 1):
        window.succeeded(100)
    assert window.limit == 100
    window.succeeded(100)
    assert window.limit == 125
    window.shrink(width=125, fits=100, range_cap=True)  # the cap is real: back under it
    assert (window.limit, window.ceiling) == (100, 100)


def test_a_known_cap_from_the_config_starts_the_window():
    assert RangeWindow(500).limit == 500


TASK = Task(1, 1000, 1999)


@pytest.mark.parametrize(
    "hint,max_blocks,expected",
    [
        ((1000, 1299), None, 1299),  # a valid hint: split right after it
        ((1000, 1999), None, 1499),  # echoes the request: halve
        ((1999, 1000), None, 1499),  # inverted: halve
        ((2000, 2500), None, 1499),  # outside: halve
        ((900, 1200), None, 1499),  # starts before the range: halve
        ((1500, 1999), None, 1499),  # a valid tail: split before it
        (None, 250, 1249),  # a stated width
        (None, 5000, 1499),  # a stated width wider than the task: halve
        ((1000, 1099), 250, 1099),  # the hint wins over the width
        (None, None, 1499),
    ],
    ids=[
        "valid-hint",
        "echoed-hint",
        "inverted-hint",
        "outside-hint",
        "overlapping-hint",
        "tail-hint",
        "width",
        "wide-width",
        "hint-and-width",
        "nothing",
    ],
)
def test_split_point_trusts_only_hints_strictly_inside_the_range(hint, max_blocks, expected):
    assert split_point(TASK, hint, max_blocks) == expected


def test_split_point_of_two_blocks_is_the_first():
    assert split_point(Task(1, 7, 8), (7, 8), None) == 7
