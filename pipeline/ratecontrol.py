"""Request pacing for one endpoint: every wait a worker makes before its next request lives here."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 30.0
JITTER = 0.2  # +-20% so workers that failed together do not retry in lockstep
RETRY_AFTER_CAP_S = 120.0


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
        delay = nominal * self.rng.uniform(1 - self.jitter, 1 + self.jitter)
        if retry_after is not None:
            # The provider said when to come back: never earlier, but not absurdly late either.
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP_S))
        return min(delay, max(self.cap, min(retry_after or 0.0, RETRY_AFTER_CAP_S)))

    def reset(self) -> None:
        """Forget past failures after a success."""
        self.failures = 0
