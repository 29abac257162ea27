"""Run statistics per endpoint, the summary.json document and the printed table."""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from pipeline.config.endpoints import Endpoint
from pipeline.messages import Attempt, EndpointState, Split, Task, TaskWritten
from pipeline.plan.chunks import merge_ranges
from pipeline.store.atomic import write_atomically
from pipeline.store.layout import SUMMARY_FILE


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
    errors: Counter = field(default_factory=Counter)
    last_error: str = ""
    consecutive_failures: int = 0  # endpoint faults only: caps and throttles are not failures
    splits: int = 0
    throttled: int = 0
    window: int | None = None
    state: str = "active"
    out_reason: str = ""

    def record_attempt(self, attempt: Attempt) -> None:
        """Count one request."""
        self.requests += 1
        self.latencies_ms.append(attempt.latency_ms)
        if attempt.ok:
            self.consecutive_failures = 0
            return
        self.failures += 1
        self.errors[attempt.error_kind] += 1
        self.last_error = f"{attempt.error_kind}: {attempt.error}"
        self.throttled += attempt.reaction == "throttle"
        if attempt.reaction == "retry":
            self.consecutive_failures += 1

    def record_split(self, split: Split) -> None:
        """Count a task cut because it was too big for the endpoint."""
        self.splits += 1
        self.window = split.window

    def record_state(self, change: EndpointState) -> None:
        """Follow the endpoint's state (active, throttled, circuit open, out...)."""
        self.state = change.state
        if change.retired:
            self.out_reason = change.detail

    def record_written(self, written: TaskWritten) -> None:
        """Credit a stored task to the endpoint that fetched it."""
        self.tasks += 1
        self.logs += written.logs

    def to_json(self) -> dict:
        """The endpoint's entry in summary.json; the URL is the redacted one."""
        return {
            "name": self.endpoint.name,
            "url": self.endpoint.safe_url,
            "requests": self.requests,
            "failures": self.failures,
            "tasks": self.tasks,
            "logs": self.logs,
            "avg_latency_ms": _round(sum(self.latencies_ms) / len(self.latencies_ms))
            if self.latencies_ms
            else None,
            "p50_latency_ms": _round(percentile(self.latencies_ms, 50)),
            "p95_latency_ms": _round(percentile(self.latencies_ms, 95)),
            "errors": dict(self.errors),
            "last_error": self.last_error or None,
            "splits": self.splits,
            "throttled": self.throttled,
            "window": self.window,
            "state": self.state,
            "out_reason": self.out_reason or None,
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def ranges_json(tasks: list[Task]) -> list[dict]:
    """Merged block ranges of `tasks`, with the last error seen in each."""
    errors = {t.start: t.last_error for t in tasks}
    out = []
    for lo, hi in merge_ranges((t.start, t.end) for t in tasks):
        reasons = sorted({errors[s] for s in errors if lo <= s <= hi and errors[s]})
        out.append({"from_block": lo, "to_block": hi, "error": "; ".join(reasons[:3]) or None})
    return out


def write_summary(out_dir: Path, summary: dict) -> Path:
    """Write summary.json atomically and durably."""
    return write_atomically(
        out_dir / SUMMARY_FILE, orjson.dumps(summary, option=orjson.OPT_INDENT_2)
    )


def format_table(endpoints: list[dict]) -> str:
    """The per-endpoint statistics as an aligned text table."""
    header = (
        "endpoint", "requests", "failures", "splits", "tasks", "logs", "avg ms", "p50 ms",
        "p95 ms", "state",
    )  # fmt: skip
    rows = [
        (
            e["name"],
            *(str(e[k]) for k in ("requests", "failures", "splits", "tasks", "logs")),
            *(
                "-" if e[k] is None else f"{e[k]:.1f}"
                for k in ("avg_latency_ms", "p50_latency_ms", "p95_latency_ms")
            ),
            e["state"],
        )
        for e in endpoints
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    # Names and states align left, numbers right.
    return "\n".join(
        "  ".join(
            [r[0].ljust(widths[0])]
            + [c.rjust(w) for c, w in zip(r[1:-1], widths[1:-1], strict=True)]
            + [r[-1]]
        ).rstrip()
        for r in [header, *rows]
    )
