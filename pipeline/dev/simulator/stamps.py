"""The blockTimestamp of the logs in eth_getLogs answers: left out (a node that does not send
it, as geth did before 1.16) or wrong (a node that lies: an hour late, or zero)."""

from __future__ import annotations

import random
import threading
from collections import Counter
from typing import Any

FAKE_SHIFT_S = 3600  # a wrong blockTimestamp is this late...
FAKE_ZERO_RATE = 0.1  # ...or, in this share of the logs, zero


class BlockTimestamps:
    """Rewrites the logs of successful eth_getLogs answers as a profile says, and counts what
    it did ("stripped", "faked", "zeroed" logs). Thread-safe; seeded."""

    def __init__(self, strip: bool, fake: bool, seed: int) -> None:
        self.strip, self.fake = strip, fake
        self._rng = random.Random(f"timestamps:{seed}")
        self._done: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether answers are rewritten at all."""
        return self.strip or self.fake

    def rewrite(self, response: dict[str, Any]) -> dict[str, Any]:
        """`response` with its logs' blockTimestamp removed or falsified (copies: upstream's
        answer is left as it was)."""
        logs = response.get("result")
        if not self.active or not isinstance(logs, list):
            return response
        with self._lock:
            rewritten = [self._log(log) for log in logs]
        return {**response, "result": rewritten}

    def counts(self) -> dict[str, int]:
        """How many logs were stripped, faked (an hour late) and zeroed."""
        with self._lock:
            return {kind: self._done[kind] for kind in ("stripped", "faked", "zeroed")}

    def _log(self, log: Any) -> Any:
        if not isinstance(log, dict) or not isinstance(log.get("blockTimestamp"), str):
            return log
        log = dict(log)
        if self.strip:
            del log["blockTimestamp"]
            self._done["stripped"] += 1
        elif self._rng.random() < FAKE_ZERO_RATE:
            log["blockTimestamp"] = "0x0"
            self._done["zeroed"] += 1
        else:
            log["blockTimestamp"] = hex(int(log["blockTimestamp"], 16) + FAKE_SHIFT_S)
            self._done["faked"] += 1
        return log
