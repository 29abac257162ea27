"""The per-endpoint timeline: every request as a bar on its endpoint's row, failures marked.

It answers "which endpoint did the work, and when did each one struggle?" at a glance. Drawing
needs matplotlib, an optional extra (`pip install 'pipeline-log-backfill[charts]'`); without it
the run simply writes no chart.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pipeline.messages import Attempt, Event, Reaction, TaskWritten
from pipeline.store.target import LocalStore, Store

OK_COLOUR, FAIL_COLOUR, THROTTLE_COLOUR = "#2a9d8f", "#d62828", "#f4a261"
MAX_SPANS = 200_000  # per endpoint; past it every other answer is dropped, failures first kept


@dataclass
class Timeline:
    """Requests per endpoint as (start, seconds, outcome), with times relative to `t0`; the
    outcome is "ok", the Reaction to a failure, or "failed" when there was none."""

    endpoints: list[str]
    t0: float
    spans: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)
    blocks: Counter = field(default_factory=Counter)  # stored per endpoint: its share

    def record(self, event: Event) -> None:
        """Keep what the chart needs from a run event; other events are ignored."""
        match event:
            case Attempt() if event.at:
                self._span(event)
            case TaskWritten():
                self.blocks[event.endpoint] += event.task.blocks

    def _span(self, attempt: Attempt) -> None:
        seconds = attempt.latency_ms / 1000
        outcome = "ok" if attempt.ok else attempt.reaction or "failed"
        start = attempt.at - self.t0 - seconds
        spans = self.spans.setdefault(attempt.endpoint, [])
        spans.append((start, seconds, outcome))
        if len(spans) > MAX_SPANS:  # a days-long run: memory stays flat, the chart readable
            spans[:] = [s for i, s in enumerate(spans) if s[2] != "ok" or i % 2]
        if len(spans) > MAX_SPANS:
            spans[:] = spans[1::2]


def warm_up() -> None:
    """Import matplotlib in the background while the run fetches: the import takes a quarter
    of a second, which would otherwise be spent after the last answer."""
    threading.Thread(target=_import_matplotlib, name="charts-import", daemon=True).start()


def _import_matplotlib() -> None:
    with contextlib.suppress(ImportError):  # no charts extra: write_timeline says so itself
        import matplotlib.backends.backend_agg
        import matplotlib.figure  # noqa: F401


def write_timeline(
    timeline: Timeline, path: Path | str, store: Store | None = None
) -> Path | PurePosixPath | None:
    """Draw the chart as a PNG at `path` (a key of `store` when given); None when matplotlib
    is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    names = timeline.endpoints
    figure = Figure(figsize=(11, 1.2 + 0.7 * len(names)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    total = sum(timeline.blocks.values()) or 1
    for row, name in enumerate(names):
        _draw_row(axes, row, timeline.spans.get(name, []))
    axes.set_yticks(
        range(len(names)),
        [f"{n}  ({timeline.blocks[n] / total:.0%} of blocks)" for n in names],
    )
    axes.set_ylim(len(names) - 0.5, -0.5)
    axes.set_xlabel("seconds since the run started")
    axes.set_title("requests per endpoint: bars are answers, red x failures, orange x throttled")
    axes.grid(axis="x", alpha=0.3)
    target, key = (store, str(path)) if store else (LocalStore(Path(path).parent), Path(path).name)
    target.write(key, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    return target.location(key)


def _draw_row(axes, row: int, spans: list[tuple[float, float, str]]) -> None:
    ok = [(start, max(seconds, 0.001)) for start, seconds, outcome in spans if outcome == "ok"]
    axes.broken_barh(ok, (row - 0.35, 0.7), facecolors=OK_COLOUR, linewidth=0)
    for colour, throttled in ((FAIL_COLOUR, False), (THROTTLE_COLOUR, True)):
        ends = [
            start + seconds
            for start, seconds, outcome in spans
            if outcome != "ok" and (outcome == Reaction.THROTTLE) == throttled
        ]
        if ends:
            axes.scatter(ends, [row] * len(ends), marker="x", color=colour, zorder=3, s=30)
