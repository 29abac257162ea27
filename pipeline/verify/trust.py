"""How far each endpoint is trusted: which of its answers are audited, and what a wrong answer
costs it. New endpoints earn trust; one that answers wrongly becomes suspect, then out."""

from __future__ import annotations

import enum
import random
import threading
from collections.abc import Iterable

NEW_AUDITS = 3  # an endpoint's first answers are all audited (while audits are on)
STRIKES_OUT = 3  # wrong answers before an endpoint is taken out of the run


class Standing(enum.StrEnum):
    """Where an endpoint stands with the verifier."""

    NEW = "new"  # its first NEW_AUDITS answers are audited
    TRUSTED = "trusted"  # a steady share of its answers is audited
    SUSPECT = "suspect"  # it answered wrongly: every answer is audited in full
    OUT = "out"  # it kept answering wrongly: taken out of the run


class Ledger:
    """Each endpoint's standing; shared by the verifier's threads."""

    def __init__(self, names: Iterable[str], audit_rate: float, seed: int = 0) -> None:
        self.audit_rate = audit_rate
        self._rng = random.Random(seed)
        self._answers = dict.fromkeys(names, 0)
        self._strikes = dict.fromkeys(self._answers, 0)
        self._lock = threading.Lock()

    def standing(self, name: str) -> Standing:
        """The endpoint's standing now."""
        with self._lock:
            return self._standing(name)

    def _standing(self, name: str) -> Standing:
        strikes = self._strikes.get(name, 0)
        if strikes >= STRIKES_OUT:
            return Standing.OUT
        if strikes:
            return Standing.SUSPECT
        return Standing.NEW if self._answers.get(name, 0) < NEW_AUDITS else Standing.TRUSTED

    def audit_due(self, name: str) -> bool:
        """Whether the endpoint's next answer is audited: all of a suspect's, the first of a new
        one's, else a share `audit_rate` at random; none when the rate is 0."""
        with self._lock:
            standing = self._standing(name)
            self._answers[name] = self._answers.get(name, 0) + 1
            if standing in (Standing.SUSPECT, Standing.OUT):
                return True
            if self.audit_rate <= 0:
                return False
            return standing is Standing.NEW or self._rng.random() < self.audit_rate

    def strike(self, name: str) -> Standing:
        """The endpoint answered wrongly; its standing after that."""
        with self._lock:
            self._strikes[name] = self._strikes.get(name, 0) + 1
            return self._standing(name)

    def trusted(self, name: str) -> bool:
        """Not suspect and not out."""
        return self.standing(name) in (Standing.NEW, Standing.TRUSTED)
