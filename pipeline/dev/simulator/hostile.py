"""Hostile answers: an upstream eth_getLogs answer mutated into one that a careless client chokes
on: quantities out of range, negative or not hex, wrong JSON types, numbers and nesting past any
parser's limits, strings where arrays belong, hashes of the wrong length, odd-length data.

Every mutation is detectably wrong (none is a valid answer that merely looks odd): a client must
refuse each one as a malformed answer, and one that stores it has a bug.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

QUANTITIES = ("blockNumber", "transactionIndex", "logIndex")
HEX_STRINGS = ("blockHash", "transactionHash", "address", "data")
HUGE_DIGITS = 400
NESTING = 10_000
Logs = list[Any]


class Mutation(NamedTuple):
    """A way to spoil an answer: the new `result` made from the (copied) logs."""

    apply: Callable[[Logs, random.Random], Any]
    needs_log: bool = True  # only answers with at least one log can be spoiled this way


def _one_log(logs: Logs, rng: random.Random) -> dict[str, Any]:
    """A log of the answer, picked at random (a copy, placed back into `logs`)."""
    at = rng.randrange(len(logs))
    logs[at] = dict(logs[at])
    return logs[at]


def _set_field(logs: Logs, rng: random.Random, fields: tuple[str, ...], value: Any) -> Logs:
    _one_log(logs, rng)[rng.choice(fields)] = value
    return logs


def _out_of_range(logs: Logs, rng: random.Random) -> Logs:
    # Past what uint32 (log and transaction index) or uint64 (block number) columns hold.
    field, value = rng.choice(
        [
            ("logIndex", "0x" + "f" * 18),
            ("transactionIndex", "0x100000000"),
            ("blockNumber", "0x" + "7" * 70),
        ]
    )
    _one_log(logs, rng)[field] = value
    return logs


def _wrong_type(logs: Logs, rng: random.Random) -> Logs:
    log = _one_log(logs, rng)
    field = rng.choice(QUANTITIES + HEX_STRINGS)
    value = log.get(field)
    # The quantity's own value as a JSON number is the most plausible mistake.
    number = int(value, 16) if field in QUANTITIES and isinstance(value, str) else 0
    log[field] = rng.choice([number, None, 1.5, True])
    return logs


def _not_a_log(logs: Logs, rng: random.Random) -> Logs:
    at = rng.randrange(len(logs))
    logs[at] = rng.choice([{"log": logs[at]}, [logs[at]], "log", 7, None, {}])
    return logs


def _result_wrong_type(logs: Logs, rng: random.Random) -> Any:
    return rng.choice([orjson.dumps(logs).decode(), {"logs": logs}, "0x", {}])


def _huge_number(logs: Logs, rng: random.Random) -> Logs:
    huge = orjson.Fragment(b"1" + b"0" * (HUGE_DIGITS - 1))
    if not logs:
        return [huge]
    return _set_field(logs, rng, QUANTITIES, huge)


def _deep_nesting(logs: Logs, rng: random.Random) -> Any:
    deep = orjson.Fragment(b"[" * NESTING + b"]" * NESTING)
    if not logs:
        return deep
    return _set_field(logs, rng, ("topics",), deep)


def _topics_a_string(logs: Logs, rng: random.Random) -> Logs:
    log = _one_log(logs, rng)
    topics = log.get("topics")
    first = topics[:1] if isinstance(topics, list) and topics and isinstance(topics[0], str) else []
    log["topics"] = rng.choice(["0xabc", *first])  # a topic where the array of them belongs
    return logs


def _hash_wrong_length(logs: Logs, rng: random.Random) -> Logs:
    log = _one_log(logs, rng)
    topics = log.get("topics") if isinstance(log.get("topics"), list) else []
    fields = [f for f in ("blockHash", "transactionHash", "address") if isinstance(log.get(f), str)]
    fields += ["topics"] if topics and isinstance(topics[0], str) else []
    field = rng.choice(fields or ["blockHash"])
    value = topics[0] if field == "topics" else log.get(field, "0x" + "00" * 32)
    wrong = value[:-2] if rng.random() < 0.5 else value + "ab"  # a byte short or a byte long
    log[field] = [wrong, *topics[1:]] if field == "topics" else wrong
    return logs


def _odd_data(logs: Logs, rng: random.Random) -> Logs:
    log = _one_log(logs, rng)
    data = log.get("data")
    log["data"] = (data if isinstance(data, str) else "0x") + "a"
    return logs


MUTATIONS: dict[str, Mutation] = {
    "quantity_out_of_range": Mutation(_out_of_range),
    "quantity_negative": Mutation(lambda logs, rng: _set_field(logs, rng, QUANTITIES, "-0x1")),
    "quantity_not_hex": Mutation(
        lambda logs, rng: _set_field(logs, rng, QUANTITIES, rng.choice(["0xzz", "12", "0x"]))
    ),
    "wrong_type": Mutation(_wrong_type),
    "not_a_log": Mutation(_not_a_log),
    "result_wrong_type": Mutation(_result_wrong_type, needs_log=False),
    "huge_number": Mutation(_huge_number, needs_log=False),
    "deep_nesting": Mutation(_deep_nesting, needs_log=False),
    "topics_a_string": Mutation(_topics_a_string),
    "hash_wrong_length": Mutation(_hash_wrong_length),
    "data_odd_length": Mutation(_odd_data),
}


class HostileAnswers:
    """Which answers to spoil, and how: a seeded draw per answer at `rate`, and the kinds dealt
    in shuffled rounds, so that every kind is served once in each round of len(kinds) spoiled
    answers (a kind that needs a log waits for an answer that has one). Thread-safe."""

    def __init__(self, rate: float, kinds: tuple[str, ...], seed: int) -> None:
        self.rate = rate
        self.kinds = kinds or tuple(MUTATIONS)
        self._rng = random.Random(f"hostile:{seed}")
        self._round: list[str] = []
        self._served: Counter[str] = Counter()
        self._lock = threading.Lock()

    def spoil(self, response: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The response to send instead of `response` (a successful eth_getLogs answer), and
        the kind of mutation served; (response, None) when it goes out unchanged."""
        logs = response.get("result")
        if not self.rate or not isinstance(logs, list):
            return response, None
        with self._lock:
            if self._rng.random() >= self.rate:
                return response, None
            kind = self._deal(has_log=bool(logs))
            if kind is None:
                return response, None
            self._served[kind] += 1
            result = MUTATIONS[kind].apply(list(logs), self._rng)
        return {**response, "result": result}, kind

    def served(self) -> dict[str, int]:
        """How many answers of each kind were spoiled."""
        with self._lock:
            return dict(self._served)

    def _deal(self, has_log: bool) -> str | None:
        if not self._round:
            self._round = list(self.kinds)
            self._rng.shuffle(self._round)
        for i, kind in enumerate(self._round):
            if has_log or not MUTATIONS[kind].needs_log:
                return self._round.pop(i)
        return None
