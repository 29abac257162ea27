"""Endpoint health: a circuit breaker that stops sending work to an endpoint that keeps failing.

Only real endpoint faults count (timeouts, dropped connections, 5xx, garbage). Range and result
caps are answers about the request, and throttling is paced by ratecontrol, so neither opens it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

FAILURES_TO_OPEN = 5
COOLDOWN_S = 10.0
MAX_COOLDOWN_S = 120.0

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    """Closed: requests flow. A run of failures opens it; after a cool-down it half-opens and
    lets one request through; a success closes it, a failure opens it for twice as long."""

    def __init__(
        self,
        failures_to_open: int = FAILURES_TO_OPEN,
        cooldown: float = COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures_to_open = failures_to_open
        self.base_cooldown = cooldown
        self.cooldown = cooldown
        self.state = CLOSED
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._probing = False

    def admit(self) -> float:
        """0 if a request may go now (in half-open state: only one), else seconds to wait."""
        with self._lock:
            if self.state == CLOSED:
                return 0.0
            if self.state == OPEN:
                wait = self._open_until - self._clock()
                if wait > 0:
                    return wait
                self.state = HALF_OPEN
            if self._probing:
                return min(1.0, self.cooldown)
            self._probing = True
            return 0.0

    def release(self) -> None:
        """The admitted request was not sent, or got an answer that says nothing about health."""
        with self._lock:
            self._probing = False

    def record_success(self) -> bool:
        """A request succeeded; True if that closed an open circuit."""
        with self._lock:
            was_open = self.state != CLOSED
            self.state, self._failures, self._probing = CLOSED, 0, False
            self.cooldown = self.base_cooldown
            return was_open

    def record_failure(self) -> bool:
        """A request failed with an endpoint fault; True if that opened the circuit."""
        with self._lock:
            self._failures += 1
            if self.state == HALF_OPEN:
                self.cooldown = min(self.cooldown * 2, MAX_COOLDOWN_S)
            elif self.state == OPEN or self._failures < self.failures_to_open:
                return False
            self.state, self._probing = OPEN, False
            self._open_until = self._clock() + self.cooldown
            return True
