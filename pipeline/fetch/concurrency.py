"""How many requests one endpoint may have in flight: found from what the endpoint answers.

The limit starts at one request (as polite as a plain loop) and is judged once per round of
answers (at least `limit` of them, so every slot has been used once, and at least ROUND_S
seconds, so that a provider's per-second cap is met one step at a time):
- a throttle, a timeout or a server error halves it at once, once per round, since the answers
  to requests sent before the cut say nothing new; a throttle also caps it for the rest of the
  run below where it was refused: from then on the provider's rate, which ratecontrol.Throttle
  paces, is the limit, and probing it again with more requests in flight would only earn more
  refusals;
- answers slower than TOLERANCE times the fastest round seen mean requests are queueing at the
  endpoint (a busy node, a shared backend): one step down;
- otherwise, if the round filled every slot, one step up, to the ceiling (--max-concurrency).
A round that did not fill its slots (paced by --rps, or short of work) leaves the limit alone:
more slots would not be used.

Latency is compared per answer size: an answer of n logs counts as 1 + n / ROWS_PER_UNIT
units, so density changes between rounds are not read as queueing.
`--concurrency N` pins the limit: none of this runs.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

START = 1
TOLERANCE = 1.6  # a round this much slower than the fastest one means queueing
ROWS_PER_UNIT = 2_000  # logs whose reading costs about as much as a request's fixed latency
MIN_ROUND = 4  # answers judged together: fewer would read noise as a trend
ROUND_S = 0.5  # and the seconds they span at least


class ConcurrencyLimit:
    """Slots for requests in flight, shared by one endpoint's threads; thread-safe."""

    def __init__(
        self,
        pinned: int | None,
        ceiling: int,
        on_change: Callable[[int], None] = lambda limit: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pinned = pinned is not None
        self.limit = pinned if pinned is not None else min(START, ceiling)
        self.ceiling = pinned if pinned is not None else ceiling
        self._on_change = on_change
        self._clock = clock
        self._round_started = clock()
        self._cond = threading.Condition()
        self._closed = False
        self._held = 0  # slots taken (a thread between acquire and release)
        self._sending = 0  # requests on the wire now
        self._round: list[float] = []  # size-adjusted latencies of this round's answers
        self._round_peak = 0  # the most requests on the wire at once this round
        self._cut = False  # this round already halved the limit
        self._fastest: float | None = None  # the lowest round median seen

    def acquire(self) -> bool:
        """Wait for a free slot; False once closed (the worker is stopping)."""
        with self._cond:
            while self._held >= self.limit and not self._closed:
                self._cond.wait()
            if self._closed:
                return False
            self._held += 1
            return True

    def release(self) -> None:
        """Give back a slot taken by acquire()."""
        with self._cond:
            self._held -= 1
            self._cond.notify()

    def close(self) -> None:
        """Wake every waiting thread: acquire() returns False from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def sending(self) -> Callable[[], None]:
        """Note a request going out; call the returned function when its answer is in."""
        with self._cond:
            self._sending += 1
            self._round_peak = max(self._round_peak, self._sending)

        def done() -> None:
            with self._cond:
                self._sending -= 1

        return done

    def on_answer(self, latency_s: float, rows: int) -> None:
        """An answer that was read: one sample of the endpoint's latency for its size."""
        if self.pinned:
            return
        with self._cond:
            before = self.limit
            self._round.append(latency_s / (1 + rows / ROWS_PER_UNIT))
            full = len(self._round) >= max(MIN_ROUND, self.limit)
            if full and self._clock() - self._round_started >= ROUND_S:
                self._judge_round()
        self._changed(before)

    def on_congestion(self, throttled: bool) -> None:
        """A throttle (`throttled`), timeout or server error: halve the limit, once per round;
        after a throttle, never again reach the limit it came at."""
        if self.pinned:
            return
        with self._cond:
            before = self.limit
            if throttled:
                self.ceiling = min(self.ceiling, max(1, self.limit - 1))
            if not self._cut:
                self._set(max(1, self.limit // 2))
                self._cut = True
        self._changed(before)

    def _judge_round(self) -> None:
        median = statistics.median(self._round)
        filled = self._round_peak >= self.limit
        if self._cut:
            pass  # the cut already moved the limit this round
        elif self._fastest is not None and median > TOLERANCE * self._fastest:
            self._set(max(1, self.limit - 1))
        elif filled:
            self._set(min(self.ceiling, self.limit + 1))
        if self._fastest is None or median < self._fastest:
            self._fastest = median
        self._round, self._round_peak, self._cut = [], self._sending, False
        self._round_started = self._clock()

    def _set(self, limit: int) -> None:
        self.limit = limit
        self._cond.notify_all()

    def _changed(self, before: int) -> None:
        # Outside the lock: the callback may block on the event queue.
        if self.limit != before:
            self._on_change(self.limit)
