"""Request pacing for one endpoint: every wait a worker makes before its next request lives here.

`Throttle` combines the three reasons to wait: the request rate (a configured ceiling, lowered
multiplicatively when the provider throttles us and raised additively after sustained success),
the backoff after failures (1 s, 2 s, 4 s ... 30 s), and the provider's own Retry-After.
It is shared by all of a worker's threads, so it is thread-safe.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 30.0
JITTER = 0.2  # +-20% so workers that failed together do not retry in lockstep
RETRY_AFTER_CAP_S = 120.0
RETRY_AFTER_FLOOR_S = 0.5  # "retry after 0 s" taken literally would hammer a throttling provider
MIN_RPS = 0.2
RATE_DECREASE = 0.5
RATE_INCREASE_EVERY = 10  # successes without a throttle before the rate goes up one step
RATE_STEP_FRACTION = 0.1  # of the configured ceiling (or of the current rate without one)
MIN_RATE_STEP = 0.5
RECENT_REQUESTS = 20  # how many request times to keep for measuring the achieved rate


@dataclass
class Backoff:
    """Exponential backoff (1 s, 2 s, 4 s ... capped at 30 s) with jitter, reset on success."""

    base: float = BACKOFF_BASE_S
    cap: float = BACKOFF_CAP_S
    jitter: float = JITTER
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        """Record a failure and return how long to wait before the next request."""
        nominal = min(self.cap, self.base * 2**self.failures)
        self.failures += 1
        delay = min(self.cap, nominal * self.rng.uniform(1 - self.jitter, 1 + self.jitter))
        if retry_after is None:
            return delay
        return max(delay, self.retry_delay(retry_after))

    def retry_delay(self, retry_after: float) -> float:
        """A provider's Retry-After stretched by up to +20% and clamped to [0.5 s, 120 s]."""
        stretched = max(retry_after, RETRY_AFTER_FLOOR_S) * self.rng.uniform(1, 1 + self.jitter)
        return min(stretched, RETRY_AFTER_CAP_S)

    def reset(self) -> None:
        """Forget past failures after a success."""
        self.failures = 0


class Throttle:
    """When the next request to one endpoint may start, and what the endpoint's rate is now."""

    def __init__(
        self,
        rps: float | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ceiling = rps  # the configured --rps; None: no ceiling
        self.rate = rps  # the current allowed rate; None: unpaced
        self.backoff = Backoff(rng=rng or random.Random())
        self._clock = clock
        self._lock = threading.Lock()
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._successes = 0
        self._recent: deque[float] = deque(maxlen=RECENT_REQUESTS)

    def reserve(self, calls: int = 1) -> float:
        """Book the next request slot for a request of `calls` calls (providers meter each call
        of a batch); return how many seconds to wait before sending it."""
        with self._lock:
            now = self._clock()
            start = max(now, self._paused_until, self._next_slot)
            if self.rate:
                self._next_slot = start + calls / self.rate
            self._recent.append(start)
            return start - now

    def limit(self, rate: float) -> None:
        """Pace at most `rate` from now on (success raises it again, up to the ceiling)."""
        with self._lock:
            self.rate = min(self.rate or rate, rate)

    def cap(self, ceiling: float) -> float:
        """A new ceiling: the rate follows it up from where it was at the old one, or down to
        it; a rate lowered by throttling stays where it is, below both. Slots booked ahead
        come closer by as much as the rate rose; returns that factor (1: unchanged)."""
        with self._lock:
            was = self.rate
            if self.rate is not None and self.ceiling is not None and self.rate >= self.ceiling:
                self.rate = ceiling
            elif self.rate is not None:
                self.rate = min(self.rate, ceiling)
            self.ceiling = ceiling
            return self._rose_from(was)

    def restore(self) -> float:
        """Back to the ceiling (unpaced without one): what lowered the rate has gone. Slots
        booked ahead come closer by as much as the rate rose; returns that factor (1: unchanged,
        0: unpaced now)."""
        with self._lock:
            was, self.rate, self._successes = self.rate, self.ceiling, 0
            return self._rose_from(was)

    def _rose_from(self, was: float | None) -> float:
        """The rate went from `was` to what it is: slots booked ahead come closer by as much as
        it rose. Returns that factor (1: it did not rise, 0: unpaced now). Holds the lock."""
        if not was or (self.rate is not None and self.rate <= was):
            return 1.0
        factor = was / self.rate if self.rate else 0.0
        now = self._clock()
        if self._next_slot > now:
            self._next_slot = now + (self._next_slot - now) * factor
        return factor

    def backlog(self) -> float:
        """Seconds from now to the next free slot: how far ahead requests are booked (or
        paused)."""
        with self._lock:
            return max(0.0, self._next_slot - self._clock(), self._paused_until - self._clock())

    def paused_for(self) -> float:
        """Seconds left of the current backoff pause (0 when none)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())

    def on_success(self) -> None:
        """A request succeeded: reset the backoff; after sustained success, raise the rate."""
        with self._lock:
            self.backoff.reset()
            self._successes += 1
            if self.rate is None or self._successes < RATE_INCREASE_EVERY:
                return
            self._successes = 0
            step = max(MIN_RATE_STEP, RATE_STEP_FRACTION * (self.ceiling or self.rate))
            self.rate = self.rate + step
            if self.ceiling is not None:
                self.rate = min(self.rate, self.ceiling)

    def on_throttled(self, retry_after: float | None, floor: float = MIN_RPS) -> float:
        """The provider said "too many requests": halve the rate (once per pause, not below
        `floor`) and pause all requests, as long as it asked or by the backoff; return the
        pause."""
        with self._lock:
            self._successes = 0
            # The requests in flight when the first refusal came are refused together: one
            # cut per pause, or N requests in flight would divide the rate by 2**N.
            if self._clock() >= self._paused_until:
                measured = self._measured_rate()
                current = self.rate if self.rate is not None else measured
                self.rate = max(floor, (current or floor) * RATE_DECREASE)
            if retry_after is not None:
                pause = self.backoff.retry_delay(retry_after)
            else:
                pause = self.backoff.next_delay()
            return self._pause(pause)

    def on_failure(self, retry_after: float | None = None) -> float:
        """A request failed (not a throttle): back off exponentially; return the pause."""
        with self._lock:
            self._successes = 0
            return self._pause(self.backoff.next_delay(retry_after))

    def _pause(self, seconds: float) -> float:
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        return seconds

    def _measured_rate(self) -> float | None:
        if len(self._recent) < 2:
            return None
        span = self._recent[-1] - self._recent[0]
        return (len(self._recent) - 1) / span if span > 0 else None
