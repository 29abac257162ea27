"""What the user sees while a run goes on: a live progress display on a terminal, plain lines
(per task, plus a periodic status line) when output goes to a file or a pipe.

Both read the same run events through RunView; --quiet and --verbose choose how much is said.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO

import click

from pipeline.messages import (
    Attempt,
    EndpointState,
    EndpointStatus,
    Event,
    Notice,
    Progress,
    Reaction,
    RunStarted,
    Split,
    TaskWritten,
)

RATE_WINDOW_S = 30.0  # logs/s and the ETA follow the recent pace, not the whole run's average
STATUS_EVERY_S = 10.0
# The states in which an endpoint waits out a pause: the console shows how long.
PAUSED = frozenset(
    {EndpointStatus.THROTTLED, EndpointStatus.BACKING_OFF, EndpointStatus.CIRCUIT_OPEN}
)


@dataclass
class EndpointView:
    """One endpoint as the console shows it."""

    tasks: int = 0
    blocks: int = 0
    logs: int = 0
    state: EndpointStatus = EndpointStatus.ACTIVE
    pause_s: float = 0.0

    def state_text(self) -> str:
        """The state, with the pause it is in when it is waiting."""
        if self.pause_s and self.state in PAUSED:
            return f"{self.state} ({self.pause_s:.0f}s)"
        return str(self.state)


@dataclass
class RunView:
    """The run's progress as the events tell it: blocks, logs, pace, and every endpoint."""

    total: int = 0
    done: int = 0
    logs: int = 0
    endpoints: dict[str, EndpointView] = field(default_factory=dict)
    history: deque = field(default_factory=deque)  # (monotonic time, blocks done, logs)

    def update(self, event: Event) -> None:
        """Fold one run event into the view."""
        match event:
            case RunStarted():
                self.total = event.to_block - event.from_block + 1
                self.done = self.total - event.todo_blocks
                self.endpoints = {name: EndpointView() for name in event.endpoints}
                self._sample()
            case TaskWritten():
                view = self.endpoints.setdefault(event.endpoint, EndpointView())
                view.tasks += 1
                view.blocks += event.task.blocks
                view.logs += event.logs
                self.done += event.task.blocks
                self.logs += event.logs
                self._sample()
            case EndpointState():
                view = self.endpoints.setdefault(event.endpoint, EndpointView())
                view.state, view.pause_s = event.state, event.pause_s

    def _sample(self) -> None:
        now = time.monotonic()
        self.history.append((now, self.done, self.logs))
        while len(self.history) > 2 and now - self.history[1][0] > RATE_WINDOW_S:
            self.history.popleft()

    def rates(self) -> tuple[float, float]:
        """(blocks/s, logs/s) over the recent window, counted up to now."""
        if not self.history:
            return 0.0, 0.0
        since, blocks, logs = self.history[0]
        seconds = max(time.monotonic() - since, 1e-3)
        return (self.done - blocks) / seconds, (self.logs - logs) / seconds

    def eta(self) -> str:
        """Time left at the recent pace, as 1h02m, 3m05s or 12s; '?' before there is a pace."""
        blocks_per_s, _ = self.rates()
        if self.done >= self.total:
            return "0s"
        if blocks_per_s <= 0:
            return "?"
        return duration(int((self.total - self.done) / blocks_per_s))

    def shares(self) -> dict[str, float]:
        """Each endpoint's share of the blocks this run stored."""
        stored = sum(v.blocks for v in self.endpoints.values()) or 1
        return {name: v.blocks / stored for name, v in self.endpoints.items()}

    def status_line(self) -> str:
        """Everything in one line, for logs and pipes."""
        percent = self.done / self.total if self.total else 1.0
        _, logs_per_s = self.rates()
        shares = self.shares()
        endpoints = ", ".join(
            f"{name} {shares[name]:.0%} {v.state_text()}" for name, v in self.endpoints.items()
        )
        return (
            f"status: {percent:.1%} of blocks ({self.done:,}/{self.total:,}), {self.logs:,} logs, "
            f"{logs_per_s:,.0f} logs/s, ETA {self.eta()}; {endpoints}"
        )


def duration(seconds: int) -> str:
    """Seconds as 1h02m, 3m05s or 12s."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def event_line(event: Event, verbose: bool) -> tuple[str, bool] | None:
    """The line an event prints in plain mode as (text, to stderr), or None for silence."""
    match event:
        case TaskWritten(task=task):
            text = f"completed task {task.task_id} (blocks {task.start}-{task.end}): "
            return f"[{event.endpoint}] {text}{event.logs} logs", False
        case Split(task=task):
            return (
                f"[{event.endpoint}] split task {task.task_id} (blocks {task.start}-{task.end}) "
                f"at {event.at}: {event.reason}",
                False,
            )
        case EndpointState():
            detail = f": {event.detail}" if event.detail else ""
            return f"[{event.endpoint}] {event.state}{detail}", True
        case Attempt(ok=False) if verbose:
            task_id = "" if event.task_id is None else f" (task {event.task_id})"
            return (
                f"[{event.endpoint}] request failed{task_id} after {event.latency_ms:.0f} ms: "
                f"{event.error_kind}: {event.error[:200]} -> {event.reaction or Reaction.RETRY}",
                True,
            )
    return None


class PlainConsole:
    """Line-by-line output: per-task lines and a status line every `every` seconds.

    quiet: notices only (warnings about endpoints and the run); verbose: also every failed
    request with its class and what was done about it.
    """

    def __init__(
        self, quiet: bool = False, verbose: bool = False, every: float = STATUS_EVERY_S
    ) -> None:
        self.quiet, self.verbose, self.every = quiet, verbose, every
        self.view = RunView()
        self.last_status = time.monotonic()
        self.shown_state: dict[str, EndpointStatus] = {}

    def __call__(self, event: Event) -> None:
        """Show one run event: a notice always, the rest unless quiet."""
        self.view.update(event)
        match event:
            case Notice():
                click.echo(event.text, err=True)
            case _ if self.quiet:
                pass
            case Progress():
                if time.monotonic() - self.last_status >= self.every:
                    self.last_status = time.monotonic()
                    click.echo(self.view.status_line())
            case _ if self._news(event):
                line = event_line(event, self.verbose)
                if line:
                    click.echo(line[0], err=line[1])

    def _news(self, event: Event) -> bool:
        # A longer pause in the same state is news for the metrics, not worth a line.
        match event:
            case EndpointState(endpoint=endpoint, state=state):
                if self.shown_state.get(endpoint) is state:
                    return self.verbose
                self.shown_state[endpoint] = state
        return True

    def __enter__(self) -> PlainConsole:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class LiveConsole(PlainConsole):
    """A live display on a terminal: bar, blocks, logs, logs/s, ETA and a row per endpoint.

    Per-task lines appear only with verbose; notices and state changes print above the display.
    """

    def __init__(self, verbose: bool = False, stream: TextIO | None = None) -> None:
        super().__init__(quiet=False, verbose=verbose)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream or sys.stdout)
        self.live = Live(
            console=self.console, get_renderable=self.render, refresh_per_second=4, transient=True
        )

    def __call__(self, event: Event) -> None:
        """Fold one run event into the display; print notices and news above it."""
        self.view.update(event)
        match event:
            case Notice():
                self.console.print(event.text, markup=False, highlight=False)
            case TaskWritten() | Split() if not self.verbose:
                pass  # the display shows the progress they make
            case _ if self._news(event):
                line = event_line(event, self.verbose)
                if line:
                    self.console.print(line[0], markup=False, highlight=False)

    def render(self):
        """The display: a progress line over a table of endpoints."""
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        view = self.view
        _, logs_per_s = view.rates()
        share = view.done / max(view.total, 1)
        head = Table.grid(padding=(0, 1), expand=True)
        head.add_column(ratio=1)
        head.add_column(no_wrap=True)
        head.add_row(
            ProgressBar(total=max(view.total, 1), completed=view.done),
            Text(f"{share:6.1%}  ETA {view.eta()}"),
        )
        numbers = Text(
            f"{view.done:,}/{view.total:,} blocks  {view.logs:,} logs  {logs_per_s:,.0f} logs/s"
        )
        table = Table(box=None, padding=(0, 2), header_style="bold")
        for column in ("endpoint", "share", "tasks", "logs", "state"):
            table.add_column(column, justify="left" if column in ("endpoint", "state") else "right")
        shares = view.shares()
        for name, endpoint in view.endpoints.items():
            table.add_row(
                name,
                f"{shares[name]:.0%}",
                f"{endpoint.tasks:,}",
                f"{endpoint.logs:,}",
                endpoint.state_text(),
            )
        return Group(head, numbers, table)

    def __enter__(self) -> LiveConsole:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.stop()


def make_console(quiet: bool = False, verbose: bool = False) -> PlainConsole:
    """The live display on an interactive terminal unless quiet, plain lines otherwise."""
    if not quiet and sys.stdout.isatty():
        return LiveConsole(verbose)
    return PlainConsole(quiet, verbose)
