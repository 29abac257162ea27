"""The supervisor: starts the queue, workers and writer of one run, watches them, and stops them
in order; what it counted becomes the run's summary.

The library entry point, `run_backfill`, is in pipeline.run.api.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.managers import SyncManager
from multiprocessing.process import BaseProcess
from pathlib import Path

from pipeline.config.settings import BackfillConfig
from pipeline.errors import ErrorKind
from pipeline.fetch.convert import log_schema
from pipeline.fetch.headers import start_tip_hashes
from pipeline.fetch.worker import EXIT_RETIRED, WorkerSpec, worker_main
from pipeline.messages import (
    Attempt,
    Checked,
    ConcurrencyChanged,
    EndpointState,
    Event,
    EventInbox,
    Held,
    Notice,
    ProcessStarted,
    Progress,
    Report,
    ResultQueue,
    RunStarted,
    Split,
    Task,
    TaskWritten,
    Unstaged,
    WorkerStarted,
    WriterFailed,
)
from pipeline.plan.board import QUEUE_GONE, BoardState, QueueManager, TaskBoard
from pipeline.plan.chunks import ChunkPlan, Coverage, gaps, merge_ranges
from pipeline.plan.runplan import Plan
from pipeline.report.stats import EndpointStats
from pipeline.report.summary import build_summary, event_summaries, write_summary
from pipeline.report.timeline import Timeline, write_timeline
from pipeline.run.eventpipes import EventPipes
from pipeline.run.lifecycle import init_child, join_all, run_child
from pipeline.store.layout import TIMELINE_FILE, worker_crash_log, writer_crash_log
from pipeline.store.manifest import load_manifest, save_manifest
from pipeline.store.resume import Resume, discard_incoming, tip_blocks
from pipeline.store.staging import commit_window
from pipeline.store.target import LocalStore
from pipeline.store.writer import WriterSpec, writer_main
from pipeline.verify.verifier import Verifier

# Every change the run makes comes as an event and wakes the loop at once; this only bounds how
# late a silent one is seen: a child that died, a signal, a stall.
POLL_S = 1.0
WRITER = "writer"  # the writer process's name
LOOK_S = 0.05  # the board and the processes are looked at at most this often
PROGRESS_S = 1.0
MAX_RESTARTS_PER_ENDPOINT = 3
# A fetched batch waits as a file, its name in the queue: room for 8 per endpoint (~25 MB of
# disk at the target answer size) lets the workers go on while the writer compacts (~0.25 s).
RESULT_QUEUE_PER_WORKER = 8
JOIN_GRACE_S = 5.0
WRITER_GRACE_S = 300.0  # the writer compacts what is staged before it stops
THROTTLED_STALL_FACTOR = 5  # endpoints that only rate-limit us get longer before the run gives up


def crash_log(path: Path, since: float) -> Path | None:
    """`path` if a process started at `since` (time.time()) left its traceback there."""
    try:
        # A second of slack for coarse file times; a stale log of a reused pid is older.
        return path if path.stat().st_mtime >= since - 1.0 else None
    except OSError:
        return None


def with_crash_log(text: str, log: Path | None) -> str:
    """A notice about a dead process, naming its traceback's file when it left one."""
    return f"{text}; traceback in {log}" if log else text


def _worker_name(spec: WorkerSpec) -> str:
    """The process name of the worker started with `spec`."""
    return f"worker-{spec.worker_id}"


def _manager_pid(manager: SyncManager) -> int:
    """The pid of a started Manager's process."""
    # SyncManager has no public pid (its process is private); the pid is only reported, for
    # tests that kill the queue process.
    return manager._process.pid


@dataclass
class _Worker:
    """One endpoint's worker process, and how often it was restarted."""

    index: int  # the endpoint's place in config.endpoints
    spec: WorkerSpec
    process: BaseProcess
    restarts: int = 0
    retired: bool = False
    started: float = 0.0  # time.time() at its start: its crash log is newer than a stale one


class Supervisor:
    """Owns the processes and the bookkeeping of one run."""

    def __init__(
        self,
        config: BackfillConfig,
        plan: Plan,
        resume: Resume,
        report: Report,
        ctx: mp.context.BaseContext,
    ) -> None:
        # What the run is: its settings and range, what earlier runs stored, who hears about it.
        self.config = config
        self.plan = plan
        self.resume = resume
        self.report = report
        self.total = plan.to_block - plan.from_block + 1
        # Final files, manifest and summary go to the store; staging and crash logs stay local.
        self.store = resume.store or LocalStore(config.output)
        self.staging = self.store.staging
        self.todo_ranges = list(resume.todo)  # grows when a liar's earlier files are taken back
        self.todo = sum(b - a + 1 for a, b in resume.todo)
        self.already_stored = self.total - self.todo

        # The processes: the Manager holding the task board and the queues, the writer, a worker
        # per endpoint. run() starts them; until then there are none.
        self.ctx = ctx
        self.manager = QueueManager(ctx=ctx)
        self.board: TaskBoard | None = None
        self.results: ResultQueue | None = None
        self.events: EventInbox | None = None
        self.writer: BaseProcess | None = None
        self.writer_started = 0.0
        self.workers: list[_Worker] = []
        self.verify = config.verify
        self.verifier: Verifier | None = None  # checks the batches the writer holds
        # The verifier's events: it runs in this process, so they need not go through the
        # Manager (two round trips each, a few hundred per million logs).
        self.checked: queue.SimpleQueue[Event] = queue.SimpleQueue()

        # The bookkeeping, fed by the events: counters per endpoint, blocks stored, the chart.
        self.stats = {e.name: EndpointStats(e) for e in config.endpoints}
        self.written = Coverage()
        self.timeline = Timeline([e.name for e in config.endpoints], time.time())
        self.started = time.monotonic()
        self.last_progress = self.started  # the last task fetched or stored (see _check_stalled)
        self.last_report = 0.0  # the last Progress event

        # How it ends: the stop asked for, the error that ends it, what is left undone, and what
        # the output folder holds once the writer is gone.
        self.signal = 0  # the first SIGINT/SIGTERM (see api._signals_recorded)
        self.force_stop = False  # a second one: stop waiting at once
        self.stopping = False  # the board is closed: workers leave once idle
        self.fatal = ""
        self.failed: list[Task] = []
        self.unfetched: list[Task] = []
        self.files = 0
        self.stored_rows = 0
        self.event_totals: dict[str, dict] = {}  # per event folder, once the output is final
        self.seconds = 0.0
        self.chart: Path | None = None
        self.tip: dict[int, str] = {}  # the end's block hashes, once complete

    def run(self) -> None:
        """Start everything, watch until the work settles, then shut down in order."""
        names = tuple(e.name for e in self.config.endpoints)
        self.report(RunStarted(self.plan.from_block, self.plan.to_block, self.todo, names))
        self.manager.start(init_child, (os.getpid(),))
        self.report(ProcessStarted("queue", _manager_pid(self.manager)))
        self.events = pipes = EventPipes()
        try:
            plan = ChunkPlan.over(self.resume.todo, self.config.chunk_size)
            self.board = self.manager.TaskBoard(plan, list(names))
            self.results = self.manager.Queue(RESULT_QUEUE_PER_WORKER * len(names))
            self._start_verifier()
            self.writer = self._start_writer()
            self.workers = [self._start_worker(i, 0) for i in range(len(names))]
            self._watch()
            self._shutdown()
        except QUEUE_GONE:
            # The Manager process holding the queue died: nothing can be coordinated any more.
            self._abandon("the task queue process died")
        finally:
            self.seconds = time.monotonic() - self.started
            if self.verifier is not None:
                self.verifier.close()
            pipes.close()
            self.manager.shutdown()

    def _start_verifier(self) -> None:
        """The verifier's threads, once the board and the queues are there (if checks are on)."""
        if self.verify:
            spec = self._worker_spec(0, 0)
            self.verifier = Verifier(
                self.config, spec, self.board, self.results, self.checked, self.plan.heads
            )

    def _abandon(self, reason: str) -> None:
        """The task board is gone: stop every process at once; what the writer did not store
        is reported unfetched."""
        self.fatal = self.fatal or reason
        join_all([w.process for w in self.workers] + [p for p in [self.writer] if p], 0.0)
        self.failed = []
        done = self.written.ranges()
        missing = [gap for a, b in self.todo_ranges for gap in gaps(a, b, done)]
        self.unfetched = [Task(-1, lo, hi) for lo, hi in missing]
        self._draw_timeline()

    def _writer_spec(self) -> WriterSpec:
        """What the writer is told: where to write, what is stored and what to fetch."""
        return WriterSpec(
            self.staging,
            self.resume.manifest,
            self.resume.todo,
            self.resume.staged,
            self.config.file_blocks,
            self.resume.events,
            self.store,
            verify=self.verify,
            max_attempts=self.config.max_attempts,
            fingerprints=tuple((e.name, e.fingerprint) for e in self.config.endpoints),
        )

    def _start_child(self, main: Callable[..., None], spec: object, name: str) -> BaseProcess:
        """Start a child process that runs `main` on `spec`, the board, the results and a pipe
        for its events, in this process's environment as it is now."""
        sender, copy = self.events.open(name)
        args = (main, os.getpid(), dict(os.environ), spec, self.board, self.results, sender)
        process = self.ctx.Process(target=run_child, args=args, name=name)
        process.start()
        self.events.started(copy)
        return process

    def _start_writer(self) -> BaseProcess:
        spec = self._writer_spec()
        self.writer_started = time.time()
        writer = self._start_child(writer_main, spec, WRITER)
        self.report(ProcessStarted("writer", writer.pid))
        return writer

    def _worker_spec(self, index: int, restarts: int) -> WorkerSpec:
        """What the worker of config.endpoints[index] is told at its start number `restarts`."""
        endpoint = self.config.endpoints[index]
        return WorkerSpec(
            worker_id=f"{endpoint.name}#{restarts}",
            endpoint=endpoint,
            log_filter=self.config.log_filter,
            chain_id=self.plan.chain_id,
            hex_output=self.config.hex_output,
            timeout=self.config.timeout,
            max_attempts=self.config.max_attempts,
            output=self.staging,
            to_block=self.plan.to_block,
            head=self.plan.heads.get(endpoint.name),
            verify=self.verify,
        )

    def _start_worker(self, index: int, restarts: int) -> _Worker:
        endpoint = self.config.endpoints[index]
        spec = self._worker_spec(index, restarts)
        started = time.time()
        process = self._start_child(worker_main, spec, _worker_name(spec))
        self.report(WorkerStarted(endpoint.name, spec.worker_id, process.pid))
        return _Worker(index, spec, process, restarts, started=started)

    def _watch(self) -> None:
        handled, looked = 0, 0.0
        while not self.force_stop:
            # Events come one at a time: the look at the board and the processes below waits
            # for a pause in them, or LOOK_S, not for each.
            handled += self._drain(LOOK_S if handled else POLL_S)
            if handled and time.monotonic() - looked < LOOK_S:
                continue
            handled, looked = 0, time.monotonic()
            state = self.board.state()
            if self.fatal or state.settled:
                return
            if self.verifier is not None:  # nothing being fetched: the checks may use it all
                self.verifier.fetching(state.fetching)
            self._report_progress(state)
            if self.signal and not self.stopping:
                self.report(
                    Notice("stopping: finishing the tasks in flight (press again to abort)")
                )
                self._stop_workers()
            self._replace_dead_workers()
            self._check_stalled()

    def _drain(self, wait: float = POLL_S) -> int:
        """Handle the events queued, the children's (waiting up to `wait` seconds for the
        first), then the verifier's; how many."""
        handled = 0
        try:
            event = self.events.get(timeout=wait) if wait else self.events.get_nowait()
            while True:
                self._handle(event)
                handled += 1
                event = self.events.get_nowait()
        except queue.Empty:
            pass
        with contextlib.suppress(queue.Empty):
            while True:
                self._handle(self.checked.get_nowait())
                handled += 1
        return handled

    def _report_progress(self, state: BoardState, final: bool = False) -> None:
        now = time.monotonic()
        if now - self.last_report < PROGRESS_S and not final:
            return
        self.last_report = now
        self.report(
            Progress(
                self.already_stored + self.written.blocks,
                self.total,
                sum(s.logs for s in self.stats.values()),
                state.pending,
                state.leased,
                now - self.started,
            )
        )

    def _handle(self, event: Event) -> None:
        self.timeline.record(event)
        match event:
            case Attempt():
                self.stats[event.endpoint].record_attempt(event)
                if event.ok and event.task_id is not None:
                    self.last_progress = time.monotonic()
            case TaskWritten():
                self.stats[event.endpoint].record_written(event)
                self.written.add(event.task.start, event.task.end)
                self.last_progress = time.monotonic()
            case Split():
                self.stats[event.endpoint].record_split(event)
            case EndpointState():
                self.stats[event.endpoint].record_state(event)
                if self.verifier is not None:
                    self.verifier.endpoint_changed(event)
            case ConcurrencyChanged():
                self.stats[event.endpoint].concurrency.record(event)
            case Held():
                self.verifier.submit(event.batch)
            case Checked():
                self.stats[event.endpoint].record_check(event)
                # Checking held answers is progress; a request of the checks that failed is not
                # (a dead endpoint's checks retrying must not hold off the stall timeout).
                if event.error is None:
                    self.last_progress = time.monotonic()
            case Unstaged() if event.earlier:  # no longer stored: this run fetches it
                self.todo_ranges.append((event.start, event.end))
                self.todo += event.end - event.start + 1
                self.already_stored -= event.end - event.start + 1
            case Unstaged():
                self.stats[event.endpoint].record_unstaged(event)
                self.written.remove(event.start, event.end)  # fetched again, written again
            case WriterFailed():
                self.fatal = event.message
        self.report(event)

    def _replace_dead_workers(self) -> None:
        if not self.writer.is_alive() and not self.fatal:
            path = writer_crash_log(self.staging, self.writer.pid)
            log = crash_log(path, self.writer_started)
            text = f"the writer process died (exit code {self.writer.exitcode})"
            self.fatal = with_crash_log(text, log)
        for slot, worker in enumerate(self.workers):
            exitcode = worker.process.exitcode
            if worker.retired or exitcode is None or (exitcode == 0 and self.stopping):
                continue
            requeued = self.board.release(worker.spec.worker_id)
            name = worker.spec.endpoint.name
            if exitcode == EXIT_RETIRED:
                worker.retired = True
                continue
            text = f"worker for {name} died (exit code {exitcode}); {requeued} tasks requeued"
            log = crash_log(
                worker_crash_log(self.staging, name, worker.process.pid), worker.started
            )
            if worker.restarts >= MAX_RESTARTS_PER_ENDPOINT or self.stopping:
                self.report(Notice(with_crash_log(text, log)))
                worker.retired = True
            else:
                self.report(Notice(with_crash_log(text + ", restarting it", log)))
                self.workers[slot] = self._start_worker(worker.index, worker.restarts + 1)
        if all(w.retired for w in self.workers):
            out = [s for s in self.stats.values() if s.out_reason]
            if len(out) == len(self.stats):
                reasons = "; ".join(f"{s.endpoint.name}: {s.out_reason}" for s in out)
                self.fatal = f"every endpoint is out of service ({reasons})"
            else:
                self.fatal = "every worker process died"

    def _check_stalled(self) -> None:
        # Progress is a fetched or stored task; without any for this long, waiting is pointless:
        # every endpoint is failing, out, or behind the blocks still missing.
        stats = self.stats.values()
        answering = any(not (s.consecutive_failures or s.out_reason) for s in stats)
        if answering and self.verifier is not None and self.verifier.busy():
            # Checks under way end by themselves (their tries and rests are bounded): while an
            # endpoint answers, the run waits for them, even while they wait on a failing one.
            self.last_progress = time.monotonic()
        limit = self.config.stall_timeout
        if any(s.last_error_kind is ErrorKind.RATE_LIMITED for s in stats):
            limit *= THROTTLED_STALL_FACTOR
        slowest = max((1 / e.rps for e in self.config.endpoints if e.rps), default=0.0)
        limit = max(limit, 5 * slowest)
        if time.monotonic() - self.last_progress > limit:
            reasons = "; ".join(
                f"{s.endpoint.name}: {s.out_reason or s.last_error or s.state}" for s in stats
            )
            failing = all(s.consecutive_failures or s.out_reason for s in stats)
            what = "every endpoint has been failing" if failing else "no block was fetched"
            self.fatal = f"{what} for {limit:.0f}s ({reasons})"

    def _stop_workers(self) -> None:
        # Closing the board is the one stop signal: workers leave once idle or out of backoff.
        # (A multiprocessing.Event would not do: a worker SIGKILLed inside Event.wait() leaves
        # its semaphores so that the next set() blocks forever.)
        self.board.close()
        self.stopping = True

    def _shutdown(self) -> None:
        if self.fatal:
            self.board.abort(self.fatal)
        if self.verifier is not None:  # what is left is checking what was fetched
            self.verifier.fetching(False)
        self._stop_workers()
        aborted = lambda: self.force_stop  # noqa: E731 - a second Ctrl-C cuts the waits short
        join_all([w.process for w in self.workers], self.config.timeout + JOIN_GRACE_S, aborted)
        if self.writer.is_alive():
            with contextlib.suppress(queue.Full):
                self.results.put(None, timeout=JOIN_GRACE_S)
        self.events.settle({_worker_name(w.spec) for w in self.workers}, JOIN_GRACE_S)
        self._drain(wait=0)  # the workers are gone: their events are all in
        # While the writer compacts what is staged: the chart, and the end's block hashes.
        tip = self._fetch_tip_hashes()
        self._draw_timeline()
        join_all([self.writer], WRITER_GRACE_S, aborted)
        self.events.settle({WRITER}, JOIN_GRACE_S)
        if tip is not None:
            self.tip, error = tip.result()
            if error:
                self.report(Notice(f"could not record the end's block hashes ({error})"))
        self._drain(wait=0)
        # Checked answers are stored in bursts, often after the last periodic Progress.
        self._report_progress(self.board.state(), final=True)
        self.failed, self.unfetched = self.board.unfinished()
        try:
            self._finish_output()
        except OSError as exc:
            self.fatal = self.fatal or f"cannot write to {self.store.uri}: {exc.strerror or exc}"

    def _draw_timeline(self) -> None:
        try:
            self.chart = write_timeline(self.timeline, TIMELINE_FILE, self.store)
        except OSError as exc:
            self.report(Notice(f"could not write {TIMELINE_FILE}: {exc.strerror or exc}"))

    def _finish_output(self) -> None:
        # The writer is gone: the manifest on disk holds everything this run stored.
        out = self.store
        discard_incoming(self.staging)
        manifest = load_manifest(out) or self.resume.manifest
        complete = not (self.fatal or self.signal or self.failed or self.unfetched)
        if complete and not manifest.files:
            # Not a single log: empty files (logs and each event), so that queries over
            # OUT/logs/*.parquet find the schema instead of failing on "no files".
            start, end = self.plan.from_block, self.plan.to_block
            schema = log_schema(self.config.hex_output)
            commit_window(out, manifest, self.resume.events, start, end, 0, schema=schema)
        if complete and (self.tip or self.plan.ends_settled):
            # A settled end is remembered by nothing: no reorg can reach it, and the last
            # run's end was checked as this one started.
            manifest.tip = self.tip
        save_manifest(out, manifest)
        self.files, self.stored_rows = len(manifest.files), manifest.rows
        self.event_totals = manifest.event_totals()

    def _fetch_tip_hashes(self) -> Future | None:
        """Start fetching the hashes at the end of a complete run; None if it is not complete, or
        ends where no reorg can reach."""
        failed, unfetched = self.board.unfinished()
        if self.fatal or self.signal or failed or unfetched or self.plan.ends_settled:
            return None
        run = (self.plan.from_block, self.plan.to_block)
        blocks = tip_blocks(merge_ranges([*self.resume.manifest.covered, run]), run[1])
        usable = [s.endpoint for s in self.stats.values() if not s.out_reason]
        return start_tip_hashes(usable, self.config, self.plan, blocks)

    def summary(self) -> dict:
        """The summary.json document of the finished run, written to the output folder; a
        failed write becomes the run's error."""
        document = build_summary(
            chain_id=self.plan.chain_id,
            from_block=self.plan.from_block,
            to_block=self.plan.to_block,
            end_reason=self.plan.end_reason,
            blocks=self.written.blocks,
            already_stored_blocks=self.already_stored,
            files=self.files,
            stored_logs=self.stored_rows,
            seconds=self.seconds,
            endpoints=self.stats.values(),
            failed=self.failed,
            unfetched=self.unfetched,
            interrupted=bool(self.signal),
            error=self.fatal,
            timeline=self.chart.name if self.chart else None,
            events=event_summaries(self.resume.manifest.events, self.event_totals),
        )
        try:
            write_summary(self.store, document)
        except OSError as exc:
            self.fatal = self.fatal or f"cannot write summary.json: {exc.strerror or exc}"
            document["error"] = self.fatal
        return document
