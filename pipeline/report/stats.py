"""Run statistics per endpoint, fed by the events the workers and the writer send."""

from __future__ import annotations

import math
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.config.endpoints import Endpoint
from pipeline.errors import ErrorKind
from pipeline.fetch.concurrency import START as ADAPTIVE_START
from pipeline.messages import (
    Attempt,
    Check,
    Checked,
    ConcurrencyChanged,
    EndpointState,
    EndpointStatus,
    Reaction,
    Split,
    TaskWritten,
    Unstaged,
)

MAX_CHANGES_SHOWN = 200  # summary.json keeps the latest changes of the concurrency limit


@dataclass
class ConcurrencyTrace:
    """An endpoint's requests-in-flight limit over the run, for summary.json."""

    limit: int
    pinned: bool
    since: float = field(default_factory=time.time)  # when `limit` took effect
    started: float = 0.0
    peak: int = 0
    weighted: float = 0.0  # sum of limit x seconds it held, for the time-weighted mean
    changes: list[tuple[float, int]] = field(default_factory=list)  # (time.time(), limit)

    def __post_init__(self) -> None:
        self.started, self.peak = self.since, self.limit

    def record(self, change: ConcurrencyChanged) -> None:
        """The limit changed (or, at a worker's start, was set)."""
        if change.limit == self.limit:
            return
        self.weighted += self.limit * max(0.0, change.at - self.since)
        self.limit, self.since = change.limit, change.at
        self.peak = max(self.peak, change.limit)
        self.changes.append((change.at, change.limit))
        del self.changes[:-MAX_CHANGES_SHOWN]

    def to_json(self, now: float) -> dict:
        """Final, peak and time-weighted mean limit, and the latest changes as [seconds since
        the run started, limit]."""
        span = now - self.started
        weighted = self.weighted + self.limit * max(0.0, now - self.since)
        return {
            "pinned": self.pinned,
            "final": self.limit,
            "max": self.peak,
            "mean": round(weighted / span, 2) if span > 0 else float(self.limit),
            "changes": [[round(at - self.started, 2), limit] for at, limit in self.changes],
        }


@dataclass
class EndpointStats:
    """Counters for one endpoint, fed by the events the workers and the writer send."""

    endpoint: Endpoint
    requests: int = 0
    failures: int = 0
    tasks: int = 0
    logs: int = 0
    # 8 bytes a request (a list of floats takes 32): a run of millions of requests stays small.
    latencies_ms: array = field(default_factory=lambda: array("d"))
    errors: Counter[ErrorKind] = field(default_factory=Counter)
    last_error: str = ""  # "kind: message", as summary.json shows it
    last_error_kind: ErrorKind | None = None  # the same error's class, for decisions
    consecutive_failures: int = 0  # endpoint faults only: caps and throttles are not failures
    splits: int = 0
    throttled: int = 0
    parser_fallbacks: int = 0  # answers the fast parser refused and the careful path read
    window: int | None = None
    state: EndpointStatus = EndpointStatus.ACTIVE
    out_reason: str = ""
    suspect: bool = False  # the verifier caught it answering wrongly
    checks: Counter[Check] = field(default_factory=Counter)
    mismatches: Counter[Check] = field(default_factory=Counter)
    # Blocks with logs, over the answers checked, whose hash a header confirmed; and those the
    # checks' sample left out (only under --rps, or an endpoint that throttles).
    hashes_confirmed: int = 0
    hashes_unconfirmed: int = 0
    concurrency: ConcurrencyTrace = field(init=False)

    def __post_init__(self) -> None:
        pinned = self.endpoint.concurrency
        start = pinned or min(ADAPTIVE_START, self.endpoint.max_concurrency)
        self.concurrency = ConcurrencyTrace(start, pinned=pinned is not None)

    def record_attempt(self, attempt: Attempt) -> None:
        """Count one request."""
        self.requests += 1
        self.latencies_ms.append(attempt.latency_ms)
        self.parser_fallbacks += attempt.parser_fallback
        if attempt.ok:
            self.consecutive_failures = 0
            return
        self.failures += 1
        self.errors[attempt.error_kind] += 1
        self.last_error = f"{attempt.error_kind}: {attempt.error}"
        self.last_error_kind = attempt.error_kind
        self.throttled += attempt.reaction is Reaction.THROTTLE
        if attempt.reaction is Reaction.RETRY:
            self.consecutive_failures += 1

    def record_split(self, split: Split) -> None:
        """Count a task cut because it was too big for the endpoint."""
        self.splits += 1
        self.window = split.window

    def record_state(self, change: EndpointState) -> None:
        """Follow the endpoint's state (active, throttled, circuit open, out...); once suspect,
        it stays so unless it goes out."""
        self.suspect = self.suspect or change.state is EndpointStatus.SUSPECT
        if self.suspect and change.state is not EndpointStatus.OUT:
            self.state = EndpointStatus.SUSPECT
        else:
            self.state = change.state
        if change.retired:
            self.out_reason = change.detail

    def record_check(self, checked: Checked) -> None:
        """Count a check of this endpoint's answers by the verifier (or a request it made)."""
        self.checks[checked.check] += 1
        if checked.error is not None:
            self.errors[checked.error] += 1  # the endpoint failed the checks' request
        if checked.mismatch:
            self.mismatches[checked.check] += 1
        self.hashes_confirmed += checked.confirmed
        self.hashes_unconfirmed += checked.unconfirmed

    def record_written(self, written: TaskWritten) -> None:
        """Credit a stored task to the endpoint that fetched it."""
        self.tasks += 1
        self.logs += written.logs

    def record_unstaged(self, unstaged: Unstaged) -> None:
        """A stored answer of this endpoint was dropped to be fetched again: uncount it."""
        self.tasks -= 1
        self.logs -= unstaged.logs

    def to_json(self) -> dict:
        """The endpoint's entry in summary.json; the URL is the redacted one. `state` stays an
        EndpointStatus (a str: JSON shows its value)."""
        latencies = self.latencies_ms
        return {
            "name": self.endpoint.name,
            "url": self.endpoint.safe_url,
            "requests": self.requests,
            "failures": self.failures,
            "tasks": self.tasks,
            "logs": self.logs,
            "avg_latency_ms": _round(sum(latencies) / len(latencies)) if latencies else None,
            "p50_latency_ms": _round(percentile(latencies, 50)),
            "p95_latency_ms": _round(percentile(latencies, 95)),
            # orjson takes only plain str keys, not StrEnum ones.
            "errors": {str(kind): count for kind, count in self.errors.items()},
            "last_error": self.last_error or None,
            "splits": self.splits,
            "throttled": self.throttled,
            "window": self.window,
            "state": self.state,
            "out_reason": self.out_reason or None,
            "parser_fallbacks": self.parser_fallbacks,
            "concurrency": self.concurrency.to_json(time.time()),
            # The verifier's checks of this endpoint's answers (pipeline.verify), and the
            # requests it made to this endpoint (header batches, audits, receipts).
            "audits": self.checks[Check.AUDIT],
            "audit_mismatches": self.mismatches[Check.AUDIT],
            "hash_mismatches": self.mismatches[Check.HASH],
            "bloom_mismatches": self.mismatches[Check.BLOOM],
            "verify_requests": self.checks[Check.REQUEST],
            "hashes_confirmed": self.hashes_confirmed,
            "hashes_unconfirmed": self.hashes_unconfirmed,
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
