"""The per-endpoint timeline: every request as a bar on its endpoint's row, failures marked.

It answers "which endpoint did the work, and when did each one struggle?" at a glance. Drawing
needs Pillow, an optional extra (`pip install 'pipeline-log-backfill[charts]'`); without it the
run simply writes no chart. The bars are painted as pixel columns with numpy, so a chart of
200,000 requests costs a few ms; matplotlib took 0.6 CPU-s (import and draw) of every run.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.messages import Attempt, Event, Reaction, TaskWritten
from pipeline.store.target import LocalStore, Store

OK_COLOUR, FAIL_COLOUR, THROTTLE_COLOUR = (42, 157, 143), (214, 40, 40), (244, 162, 97)
INK, GRID, PAPER = (40, 40, 40), (225, 225, 225), (255, 255, 255)
WIDTH, ROW, TOP, BOTTOM, PAD = 1100, 36, 34, 44, 12  # pixels
FONT_SIZE, CROSS = 13, 4
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


def write_timeline(
    timeline: Timeline, path: Path | str, store: Store | None = None
) -> Path | PurePosixPath | None:
    """Draw the chart as a PNG at `path` (a key of `store` when given); None when Pillow is
    not installed."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        return None
    try:
        font = ImageFont.load_default(size=FONT_SIZE)
    except TypeError:  # Pillow before 10.1: its one bitmap font
        font = ImageFont.load_default()
    names = timeline.endpoints
    total = sum(timeline.blocks.values()) or 1
    labels = [f"{n}  ({timeline.blocks[n] / total:.0%} of blocks)" for n in names]
    left = PAD + int(max((font.getlength(label) for label in labels), default=0)) + PAD
    ends = [s + d for spans in timeline.spans.values() for s, d, _ in spans]
    axis = _Axis(left, WIDTH - left - PAD, _axis_end(max(ends, default=0.0)))
    image = Image.fromarray(_bars(timeline, axis))
    draw = ImageDraw.Draw(image)
    _text(draw, (PAD, PAD // 2), TITLE, font)
    for row, (name, label) in enumerate(zip(names, labels, strict=True)):
        middle = TOP + row * ROW + ROW // 2
        _text(draw, (PAD, middle), label, font, "lm")
        for start, seconds, outcome in timeline.spans.get(name, []):
            if outcome != "ok":
                colour = THROTTLE_COLOUR if outcome == Reaction.THROTTLE else FAIL_COLOUR
                _cross(draw, axis.x(start + seconds), middle, colour)
    bottom = image.height - BOTTOM
    draw.line([(left, bottom), (left + axis.width, bottom)], fill=INK)
    for tick in axis.ticks():
        draw.line([(axis.x(tick), bottom), (axis.x(tick), bottom + 4)], fill=INK)
        _text(draw, (axis.x(tick), bottom + 6), f"{tick:g}", font, "mt")
    _text(draw, (left + axis.width // 2, image.height - PAD // 2), XLABEL, font, "mb")
    target, key = (store, str(path)) if store else (LocalStore(Path(path).parent), Path(path).name)
    target.write(key, lambda tmp: image.save(tmp, format="PNG"))
    return target.location(key)


@dataclass(frozen=True)
class _Axis:
    """The time axis: where it starts (pixels), how wide it is, and the seconds it spans."""

    left: int
    width: int
    seconds: float

    def x(self, second: float) -> int:
        """The pixel column of a moment of the run."""
        return self.left + round(second * self.width / self.seconds)

    def ticks(self) -> list[float]:
        step = _step(self.seconds)
        return [i * step for i in range(int(self.seconds / step + 1e-9) + 1)]


def _bars(timeline: Timeline, axis: _Axis) -> np.ndarray:
    """The chart's pixels: paper, the grid, and each endpoint's answered requests as bars."""
    height = TOP + ROW * len(timeline.endpoints) + BOTTOM
    pixels = np.full((height, WIDTH, 3), PAPER, np.uint8)
    for tick in axis.ticks():
        pixels[TOP : height - BOTTOM, axis.x(tick)] = GRID
    scale = axis.width / axis.seconds
    for row, name in enumerate(timeline.endpoints):
        top = TOP + row * ROW + ROW // 6
        covered = _covered(timeline.spans.get(name, []), scale, axis.width)
        pixels[top : top + ROW - ROW // 3, axis.left : axis.left + axis.width][:, covered] = (
            OK_COLOUR
        )
    return pixels


def _text(draw, xy: tuple[int, int], text: str, font, anchor: str = "lt") -> None:
    """Text placed by its left/middle and top/middle/bottom (`anchor`, as Pillow's), measured
    here: bitmap fonts take no anchor."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = xy[0] - left - ((right - left) // 2 if anchor[0] == "m" else 0)
    y = xy[1] - {"t": top, "m": (top + bottom) // 2, "b": bottom}[anchor[1]]
    draw.text((x, y), text, fill=INK, font=font)


TITLE = "requests per endpoint: bars are answers, red x failures, orange x throttled"
XLABEL = "seconds since the run started"


def _covered(spans: list[tuple[float, float, str]], scale: float, width: int) -> np.ndarray:
    """Which of `width` pixel columns an answered request covers (at least one column each)."""
    ok = np.array([(s, d) for s, d, outcome in spans if outcome == "ok"], np.float64)
    edges = np.zeros(width + 1, np.int64)
    if len(ok):
        first = np.clip((ok[:, 0] * scale).astype(np.int64), 0, width - 1)
        last = np.clip(((ok[:, 0] + ok[:, 1]) * scale).astype(np.int64), first, width - 1)
        np.add.at(edges, first, 1)
        np.add.at(edges, last + 1, -1)
    return np.cumsum(edges[:-1]) > 0


def _cross(draw, x: int, y: int, colour: tuple[int, int, int]) -> None:
    draw.line([(x - CROSS, y - CROSS), (x + CROSS, y + CROSS)], fill=colour, width=2)
    draw.line([(x - CROSS, y + CROSS), (x + CROSS, y - CROSS)], fill=colour, width=2)


def _axis_end(seconds: float) -> float:
    """The axis's length: the run's end rounded up to a tick (1 s at least)."""
    step = _step(max(seconds, 1.0))
    return math.ceil(max(seconds, 1.0) / step) * step


def _step(seconds: float) -> float:
    """A tick interval of 1, 2 or 5 x 10^k giving 4 to 10 ticks over `seconds`."""
    power = 10 ** math.floor(math.log10(seconds / 4))
    return next(m * power for m in (1, 2, 5, 10) if seconds / (m * power) <= 10)
