"""The library entry point the CLI and the tests call: `run_backfill(config, report)`."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from types import FrameType

from pipeline.config.endpoints import same_urls
from pipeline.config.settings import BackfillConfig
from pipeline.fetch.headers import hashes_from_any
from pipeline.messages import Event, Notice, Report
from pipeline.plan.runplan import Plan
from pipeline.run.engine import RunEngine, open_engine
from pipeline.run.lifecycle import lean_memory
from pipeline.run.preflight import resolve_plan
from pipeline.run.supervisor import Supervisor
from pipeline.store.access import holding, open_checked
from pipeline.store.resume import prepare_output

EXIT_OK, EXIT_INCOMPLETE = 0, 1
EXIT_ON_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass(frozen=True)
class RunResult:
    """How the run ended: exit code, the summary document, and a one-line verdict."""

    exit_code: int
    summary: dict
    message: str


def _ignore(event: Event) -> None:
    """The report of a caller that does not listen."""


def run_backfill(
    config: BackfillConfig, report: Report = _ignore, preflight: Future[Plan] | None = None
) -> RunResult:
    """Fetch every log of the configured range into config.output; RPC faults never raise.
    `preflight`: preflight.start_preflight(config), started earlier (default: asked now).

    Raises ConfigError for bad input and NoEndpointError when no endpoint answers; in both cases
    nothing has been written. The calling process is made lean (lifecycle.lean_memory): the
    verifier runs in it, and with pyarrow's allocator (a heap per thread) its threads held
    ~300 MB more at their peak over 1M logs than with the system one (measured).
    """
    lean_memory()
    engine = open_engine(config)  # first: a missing Ray or a bad cluster address writes nothing
    try:
        return _run(config, report, engine, preflight)
    finally:
        engine.close()


def _run(
    config: BackfillConfig, report: Report, engine: RunEngine, preflight: Future[Plan] | None
) -> RunResult:
    """run_backfill's work, on `engine`'s supervisor."""
    # An object store that cannot be reached is a one-line error before anything runs.
    store = open_checked(config.output, config.staging)
    plan = resolve_plan(config) if preflight is None else preflight.result()
    for name, twin in same_urls(config.endpoints):
        report(
            Notice(
                f"{name} and {twin} are one URL: they share its limits, and checking one's "
                "answers against the other's proves nothing; give it once"
            )
        )
    for probe in plan.silent:
        report(Notice(f"{probe.endpoint.name} did not answer at start ({probe.error}); will retry"))
    for probe in plan.behind:
        report(
            Notice(
                f"{probe.endpoint.name} is at block {probe.head}, behind the end block "
                f"{plan.to_block}: it serves only blocks it has"
            )
        )
    with holding(store) as store:  # one run at a time: the folder lock, object storage's lease
        endpoints = list(config.endpoints)
        resume = prepare_output(
            config, plan, lambda blocks: hashes_from_any(endpoints, config, plan, blocks), store
        )
        for note in resume.notes:
            report(Notice(note))
        supervisor = engine.supervisor(config, plan, resume, report)
        with _signals_recorded(supervisor):
            supervisor.run()
        return _result(supervisor, supervisor.summary())


@contextlib.contextmanager
def _signals_recorded(supervisor: Supervisor) -> Iterator[None]:
    """SIGINT/SIGTERM ask for a graceful stop; a second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        if supervisor.signal:
            supervisor.force_stop = True
        supervisor.signal = signum

    previous = {s: signal.signal(s, handle) for s in EXIT_ON_SIGNAL}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _wrong_answers(s: Supervisor) -> str:
    """The ranges left unsettled and the endpoints caught answering wrongly, if any."""
    liars = [f"{x.endpoint.name} ({x.state})" for x in s.stats.values() if x.suspect]
    if not liars:
        return ""
    ranges = ", ".join(f"{t.start}-{t.end}" for t in [*s.failed, *s.unfetched][:3])
    return f"; unsettled: blocks {ranges}…; answered wrongly: {', '.join(liars)}"


def _result(supervisor: Supervisor, summary: dict) -> RunResult:
    """The exit code and one-line verdict of the finished run, with its summary."""
    s = supervisor
    total, done = s.total, s.written.blocks + s.already_stored
    if s.signal:
        code = EXIT_ON_SIGNAL[s.signal]
        message = f"interrupted: {done} of {total} blocks stored; run again to resume"
    elif s.failed or s.unfetched:
        code = EXIT_INCOMPLETE
        missing = len(summary["failed_ranges"]) + len(summary["unfetched_ranges"])
        message = (
            f"incomplete: {total - done} of {total} blocks in {missing} ranges "
            f"not fetched{': ' + s.fatal if s.fatal else ''}{_wrong_answers(s)} (see "
            "summary.json); run again to resume"
        )
    elif s.fatal:
        code, message = EXIT_INCOMPLETE, f"every block was fetched, but {s.fatal}"
    else:
        code = EXIT_OK
        earlier = f" ({s.already_stored} already stored)" if s.already_stored else ""
        message = (
            f"complete: blocks {s.plan.from_block}-{s.plan.to_block}{earlier}, "
            f"{summary['logs']} logs fetched in {s.seconds:.1f}s"
        )
    return RunResult(code, summary, message)
