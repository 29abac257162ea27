"""Liars: providers whose eth_getLogs answers are wrong with HTTP 200 and no error, for the
product's verification (headers, blooms, cross-endpoint audits) to catch.

- behind: a load balancer whose eth_blockNumber (and head tags) come from an up-to-date backend,
  but whose eth_getLogs backend trails it by `liar_lag` blocks: logs past that head are left out
  (the whole answer [] or only that part), and headers or receipts of blocks it lacks are null,
  unless `liar_split_batches` sends a batch's other calls to the up-to-date backend.
- drops: one log left out of an answer (one whose block keeps other logs, so a bloom cannot tell).
- blanks: every log of one block left out, as if the block had none (an index gap cannot tell).
- orphans: every log of one block carries the hash of an orphaned block instead of its own.
- truncates: the answer cut to the logs of its first half of blocks.
- fabricates: a log that does not exist added: a copy of a real one with a random topic0 and a
  logIndex after its block's last (it still matches an address filter; the bloom excludes it).

The sampled kinds spoil a seeded share `liar_rate` of the answers they can spoil; every spoiled
answer is counted by kind.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from pipeline.dev.providers import LIARS, Profile
from pipeline.dev.simulator.wire import log_block, quantity

# Calls about one block that the lagging backend of a "behind" liar answers null when it lacks it.
BLOCK_METHODS = frozenset({"eth_getBlockByNumber", "eth_getBlockReceipts"})
ORPHAN_SALT = b"orphan"
Logs = list[Any]
Post = Callable[[dict[str, Any]], dict[str, Any]]  # one call upstream -> its response object


def orphan_hash(block_hash: str) -> str:
    """The (deterministic, fake) hash of the orphaned block a lie puts in place of `block_hash`."""
    raw = bytes.fromhex(block_hash[2:]) if block_hash.startswith("0x") else block_hash.encode()
    return "0x" + hashlib.sha256(raw + ORPHAN_SALT).hexdigest()


class Liars:
    """The lies of one profile, and how many answers each kind spoiled. Thread-safe; seeded."""

    def __init__(self, profile: Profile) -> None:
        self.kind = profile.liar
        self.rate = profile.liar_rate
        self.after = profile.liar_after
        self._spared = 0  # answers it could have spoiled, sent honest (up to `after`)
        self.lag = profile.liar_lag
        self.mode = profile.liar_behind_mode
        self.split = profile.liar_split_batches
        self._rng = random.Random(f"liars:{profile.seed}")
        self._lies: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """Whether this provider lies at all."""
        return bool(self.kind)

    @property
    def behind(self) -> bool:
        """Whether eth_getLogs comes from a backend behind the head the provider reports."""
        return self.kind == "behind"

    def counts(self) -> dict[str, int]:
        """Answers spoiled, by kind (every kind listed; 0 when none)."""
        with self._lock:
            return {kind: self._lies[kind] for kind in LIARS}

    # --- behind ----------------------------------------------------------------------------------

    def lagging_head(self, head: int) -> int:
        """The head of the eth_getLogs backend when the up-to-date one is at `head`."""
        return max(0, head - self.lag)

    def behind_logs(self, logs: Logs, end: int | None, head: int) -> Logs:
        """What the lagging backend answers for a query up to `end` (None: a blockHash query,
        which it can only answer for blocks it has)."""
        lagging = self.lagging_head(head)
        if self.mode == "empty" and end is not None:
            kept = [] if end > lagging else logs
        else:
            kept = [log for log in logs if log_block(log) <= lagging]
        if len(kept) != len(logs):
            self._count("behind")
        return kept

    def lacks(self, call: dict[str, Any], head: int, in_batch: bool) -> bool:
        """Whether the lagging backend answers this header or receipts call, and answers null
        for a block it has not seen (tags and hashes are answered by the up-to-date backend)."""
        if not self.behind or call.get("method") not in BLOCK_METHODS or (self.split and in_batch):
            return False
        params = call.get("params")
        number = quantity(params[0]) if isinstance(params, list) and params else None
        if number is None or number <= self.lagging_head(head):
            return False
        self._count("behind")
        return True

    # --- sampled lies ----------------------------------------------------------------------------

    def lie(self, logs: Logs, post: Post) -> Logs | None:
        """The logs to send instead of `logs` (a successful answer), or None to send them as
        they are. `post` asks upstream (fabricates needs its block's last logIndex)."""
        if self.kind not in _SAMPLED or not isinstance(logs, list):
            return None
        if len(logs) < (2 if self.kind == "truncates" else 1):
            return None
        if not all(isinstance(log, dict) for log in logs):
            return None
        with self._lock:
            if self._spared < self.after:  # honest at first: trusted before it starts lying
                self._spared += 1
                return None
            if self._rng.random() >= self.rate:
                return None
            self._lies[self.kind] += 1
            return _SAMPLED[self.kind](list(logs), self._rng, post)

    def _count(self, kind: str) -> None:
        with self._lock:
            self._lies[kind] += 1


def _drop(logs: Logs, rng: random.Random, post: Post) -> Logs:
    per_block = Counter(log_block(log) for log in logs)
    hidden = [i for i, log in enumerate(logs) if per_block[log_block(log)] > 1]
    del logs[rng.choice(hidden or range(len(logs)))]
    return logs


def _blank(logs: Logs, rng: random.Random, post: Post) -> Logs:
    block = rng.choice(sorted({log_block(log) for log in logs}))
    return [log for log in logs if log_block(log) != block]


def _orphan(logs: Logs, rng: random.Random, post: Post) -> Logs:
    block = rng.choice(sorted({log_block(log) for log in logs}))
    return [
        {**log, "blockHash": orphan_hash(str(log.get("blockHash", "")))}
        if log_block(log) == block
        else log
        for log in logs
    ]


def _truncate(logs: Logs, rng: random.Random, post: Post) -> Logs:
    blocks = sorted({log_block(log) for log in logs})
    if len(blocks) == 1:  # one block: the first half of its logs
        return logs[: len(logs) // 2]
    kept = set(blocks[: len(blocks) // 2])
    return [log for log in logs if log_block(log) in kept]


def _fabricate(logs: Logs, rng: random.Random, post: Post) -> Logs:
    real = logs[rng.randrange(len(logs))]
    block = log_block(real)
    # The answer may be filtered: the block's own last log says where a new logIndex is free.
    query = {"blockHash": real.get("blockHash")}
    response = post({"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [query]})
    known = response.get("result") if isinstance(response.get("result"), list) else []
    same = [log for log in [*known, *logs] if isinstance(log, dict) and log_block(log) == block]
    last = max((quantity(log.get("logIndex")) or 0 for log in same), default=-1)
    topics = list(real.get("topics") or [None])
    topics[0] = f"0x{rng.getrandbits(256):064x}"
    fake = {**real, "topics": topics, "logIndex": hex(last + 1)}
    after = max(i for i, log in enumerate(logs) if log_block(log) == block)
    logs.insert(after + 1, fake)
    return logs


_SAMPLED: dict[str, Callable[[Logs, random.Random, Post], Logs]] = {
    "drops": _drop,
    "blanks": _blank,
    "orphans": _orphan,
    "truncates": _truncate,
    "fabricates": _fabricate,
}
