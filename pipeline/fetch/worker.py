"""Worker process: one per endpoint, with a thread per request it may have in flight; each pulls
a task whenever the endpoint can take one, fetches its logs, and reacts to the endpoint's answer.

All of an endpoint's learned state is shared by its threads: how many requests may be in flight
(concurrency.ConcurrencyLimit), the pacing (ratecontrol.Throttle), the circuit breaker (health),
the request window (window) and the endpoint's head.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config.endpoints import scrub
from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.answers import fetch_range
from pipeline.fetch.concurrency import ConcurrencyLimit
from pipeline.fetch.convert import logs_to_table
from pipeline.fetch.health import CircuitBreaker
from pipeline.fetch.inbox import InboxPool
from pipeline.fetch.ratecontrol import Throttle
from pipeline.fetch.reactions import HEADER_REACTIONS, REACTIONS
from pipeline.fetch.rpc import BlockHeader, RpcClient
from pipeline.fetch.spec import WorkerSpec
from pipeline.fetch.timestamps import BlockTimestamps
from pipeline.fetch.validate import check_batch, check_not_removed
from pipeline.fetch.window import RangeWindow
from pipeline.messages import (
    Attempt,
    ConcurrencyChanged,
    EndpointState,
    EndpointStatus,
    EventQueue,
    FetchedBatch,
    Notice,
    Reaction,
    ResultQueue,
    Split,
    Task,
    WriterFailed,
)
from pipeline.plan.board import QUEUE_GONE, TaskBoard
from pipeline.plan.chunks import split_point
from pipeline.store.files import write_result
from pipeline.store.layout import incoming_path, worker_crash_log
from pipeline.verify.bloomcheck import bloom_excluded
from pipeline.verify.headproof import proof_blocks, prove

# Hands a fetched task's table to the writer; raises OSError when the writer cannot take it.
Deliver = Callable[[Task, pa.Table, bool], None]  # the table, and FetchedBatch.headed

CLAIM_WAIT_S = 0.5
HEAD_REFRESH_S = 2.0  # how stale the endpoint's head may be before we ask again when we need it
EXIT_RETIRED = 3  # the endpoint is out for the rest of the run: the supervisor must not restart it
EXIT_CRASHED = 70
# Failures that mean the endpoint has more requests than it can serve: fewer in flight.
CONGESTION = frozenset({ErrorKind.TIMEOUT, ErrorKind.SERVER, ErrorKind.CONNECTION})


def worker_main(
    spec: WorkerSpec,
    board: TaskBoard,
    results: ResultQueue | None,
    events: EventQueue,
    deliver: Deliver | None = None,
) -> None:
    """Run the endpoint's threads until the board closes; exit EXIT_RETIRED if it was retired.
    `deliver` replaces the result files and `results` (see EndpointWorker)."""
    worker = EndpointWorker(spec, board, results, events, deliver)
    # Where the limit starts: the summary and the metrics follow it from here.
    events.put(ConcurrencyChanged(worker.name, worker.concurrency.limit, time.time()))
    threads = [
        threading.Thread(target=worker.guarded_loop, name=f"fetch-{i}", daemon=True)
        for i in range(spec.endpoint.threads)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if worker.retired:
        sys.exit(EXIT_RETIRED)


class EndpointWorker:
    """One endpoint's shared state and the fetch loop its threads run."""

    def __init__(
        self,
        spec: WorkerSpec,
        board: TaskBoard,
        results: ResultQueue | None,
        events: EventQueue,
        deliver: Deliver | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.endpoint.name
        self.board, self.results, self.events = board, results, events
        # How a fetched table reaches the writer: by default a result file whose name is queued;
        # another engine brings its own (the Ray engine's goes through Ray's object store).
        self.deliver: Deliver = deliver or self._deliver_file
        self.throttle = Throttle(spec.endpoint.rps)
        self.breaker = CircuitBreaker()
        self.concurrency = ConcurrencyLimit(
            spec.endpoint.concurrency,
            spec.endpoint.max_concurrency,
            on_change=lambda limit: self.events.put(
                ConcurrencyChanged(self.name, limit, time.time())
            ),
        )
        self.window = RangeWindow(spec.endpoint.max_blocks)
        self.inboxes = InboxPool()  # the answers' receive buffers, one per request in flight
        self.head = spec.head
        self.head_checked = 0.0 if spec.head is None else time.monotonic()
        self.retired = ""
        self.stopped = False  # the results cannot be written: leave the run to the supervisor
        self._state = (EndpointStatus.ACTIVE, 0.0)
        self._lock = threading.Lock()
        self.timestamps = BlockTimestamps(
            self.name,
            pace=lambda calls: self._sleep(self.throttle.reserve(calls)),
            record=self._record,
            notice=lambda text: self.events.put(Notice(text)),
        )
        self._rng = random.Random()  # which topics of an answer are held against the blooms
        self.has_receipts = True  # until it says eth_getBlockReceipts is not there

    def guarded_loop(self) -> None:
        """The fetch loop; a lost queue ends the process quietly, any other crash with its
        traceback in the output folder's crash log, so that the supervisor requeues this
        endpoint's leases either way (and its notice names the log)."""
        try:
            self.loop(RpcClient(self.spec.endpoint, self.spec.timeout))
        except QUEUE_GONE:
            os._exit(0)  # the supervisor reports a lost queue itself
        except BaseException:
            try:
                self._save_traceback()
            finally:
                os._exit(EXIT_CRASHED)  # whatever saving it met: a thread must not die alone

    def _save_traceback(self) -> None:
        """Append the current exception's traceback, without the URL's key, to the crash log;
        where that cannot be written, say its last line on stderr instead."""
        text = scrub(traceback.format_exc(), self.spec.endpoint.url)
        path = worker_crash_log(self.spec.output, self.name, os.getpid())
        header = f"worker for {self.name} (pid {os.getpid()}) crashed at {time.ctime()}\n"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as log:
                log.write(header + text)
        except OSError as exc:
            last = text.strip().splitlines()[-1] if text.strip() else "unknown error"
            print(
                f"worker for {self.name} crashed: {last} (cannot write {path}: {exc.strerror})",
                file=sys.stderr,
            )

    def loop(self, client: RpcClient) -> None:
        """Claim, fetch, hand over, within the endpoint's concurrency limit; exit once the board
        is closed or the endpoint retired."""
        try:
            while not (self.retired or self.stopped) and self.concurrency.acquire():
                try:
                    if self._step(client):
                        break
                finally:
                    self.concurrency.release()
        finally:
            self.concurrency.close()  # the threads waiting for a slot leave too
            client.close()

    def _step(self, client: RpcClient) -> bool:
        """One turn of the loop, holding a slot: True when the worker is done."""
        wait = self.throttle.paused_for() or self.breaker.admit()
        if wait > 0:
            return self._sleep(wait)
        if self.head is None or self._head_stale():
            self._refresh_head(client)
            return False
        task = self.board.claim(self.spec.worker_id, CLAIM_WAIT_S, self.window.limit, self.head)
        if self.spec.verify and self.spec.endpoint.rps:
            for _ in range(self.board.debt(self.name)):  # the verifier's calls count to --rps
                self.throttle.reserve()
        if task is None:
            self.breaker.release()
            return self.board.closed()
        if (pause := self.throttle.paused_for()) > 0:
            # Another thread's failure paused the endpoint while this one waited for work: the
            # task goes back for the other endpoints instead of waiting out the pause leased here.
            self.breaker.release()
            self.board.retry(task)
            return self._sleep(pause)
        if self._sleep(self.throttle.reserve()):
            self.board.retry(task)
            return True
        self.fetch(client, task)
        return False

    def _sleep(self, seconds: float) -> bool:
        """Wait, waking early on close; True if the board closed."""
        if seconds <= 0:
            return self.board.closed()
        return self.board.wait_closed(seconds)

    def _head_stale(self) -> bool:
        # Only worth a request when there is work this endpoint cannot take because of its head.
        if self.head >= self.spec.to_block or time.monotonic() - self.head_checked < HEAD_REFRESH_S:
            return False
        return self.board.waiting_beyond(self.head)

    def _refresh_head(self, client: RpcClient) -> None:
        self._sleep(self.throttle.reserve())
        try:
            head = client.block_number()
        except RpcError as err:
            reaction = REACTIONS.get(err.kind, Reaction.RETRY)
            if reaction not in (Reaction.THROTTLE, Reaction.RETIRE):
                reaction = Reaction.RETRY  # the head request has no range to split or exclude
            self._record(False, client, None, err, reaction)
            self._endpoint_reaction(err, reaction)
            return
        self._record(True, client, None)
        self.breaker.record_success()
        with self._lock:
            self.head, self.head_checked = head, time.monotonic()

    def fetch(self, client: RpcClient, task: Task) -> None:
        """Fetch one leased task, give every log its block's timestamp and hand the result to
        the writer, or react to the failure."""
        answered = self.concurrency.sending()
        try:
            with self.inboxes.lent() as inbox:
                fetched = fetch_range(client, task, self.spec, inbox)
        except RpcError as err:
            self.react(client, task, err)
            return
        finally:
            answered()
        self.concurrency.on_answer(client.last_latency_ms / 1000, fetched.table.num_rows)
        self._record(True, client, task, parser_fallback=fetched.parser_fallback)
        try:
            self._prove(client, task, fetched.table)
        except RpcError as err:
            self.react(client, task, err, header=True)
            return
        self._stamp_and_deliver(client, task, fetched.table)

    def _prove(self, client: RpcClient, task: Task, table: pa.Table) -> None:
        """Near the endpoint's head, check that the backend that answered has the blocks."""
        with self._lock:
            head = self.head
        blocks = proof_blocks(task.start, task.end, head) if self.spec.verify else range(0)
        if not blocks:
            return

        def receipts(block: int) -> list[dict]:
            if not self.has_receipts:
                return []  # no eth_getBlockReceipts here: the bloom cannot be settled
            self._sleep(self.throttle.reserve())
            try:
                logs = client.block_logs(block)
            except RpcError as err:
                if err.kind is not ErrorKind.PERMANENT:
                    raise
                self.has_receipts = False  # hardhat, ganache, older nodes: never ask again
                return []
            self._record(True, client, task)
            return logs

        headers = lambda numbers: self.timestamps.headers(client, task, numbers)  # noqa: E731
        prove(table, blocks, self.spec.log_filter, headers, receipts)

    def _stamp_and_deliver(self, client: RpcClient, task: Task, table: pa.Table) -> None:
        """Fill the block timestamps (from headers where the logs lack them) and deliver."""
        try:
            table, headers = self.timestamps.fill(client, task, table)
        except RpcError as err:
            self.react(client, task, err, header=True)
            return
        self._deliver(task, table, self.spec.verify and self._headed(table, headers))

    def _headed(self, table: pa.Table, headers: dict[int, BlockHeader]) -> bool:
        """Whether the headers read for timestamps cover every block with logs, and no log is
        outside its block's bloom (else the checks read the headers and judge)."""
        if not table.num_rows or len(headers) < len(pc.unique(table["block_number"])):
            return False
        return bloom_excluded(table, headers, self._rng) is None

    def _deliver(self, task: Task, table: pa.Table, headed: bool) -> None:
        self.throttle.on_success()
        self.breaker.record_success()
        self._set_state(EndpointStatus.ACTIVE, "")
        self.window.succeeded(task.blocks)
        # The lease stays ours until the writer has stored the batch: if we die now, it is redone.
        try:
            self.deliver(task, table, headed)
        except OSError as exc:
            self.board.retry(task)
            # The disk is the writer's business: say it once, as the writer would, and stop.
            self.events.put(WriterFailed(f"cannot write to {self.spec.output}: {exc.strerror}"))
            self.stopped = True

    def _deliver_file(self, task: Task, table: pa.Table, headed: bool) -> None:
        """The default delivery: the table as a result file in the output folder, its name
        queued for the writer."""
        path = incoming_path(self.spec.output, os.getpid(), task.task_id)
        try:
            write_result(table, path)
        except OSError:
            path.unlink(missing_ok=True)
            raise
        self.results.put(FetchedBatch(task, self.name, str(path), table.num_rows, headed))

    def react(
        self,
        client: RpcClient,
        task: Task,
        err: RpcError,
        fallback: bool = True,
        header: bool = False,
    ) -> None:
        """Do what the error class calls for (see Reaction); `header`: the failed request was
        for block headers of the task's logs."""
        reaction = REACTIONS.get(err.kind, Reaction.RETRY)
        if header and reaction not in HEADER_REACTIONS:
            # Quota and auth still retire the endpoint; nothing else of a header is the range's.
            quota = err.kind in (ErrorKind.QUOTA, ErrorKind.UNAUTHORIZED)
            reaction = Reaction.RETIRE if quota else Reaction.RETRY
        if not fallback and err.kind is ErrorKind.PERMANENT:
            reaction = Reaction.EXCLUDE  # no eth_getBlockReceipts here; another endpoint may have
        self._record(False, client, task, err, reaction)
        failed = replace(task, last_error=f"{self.name}: {err}")
        if reaction is Reaction.SPLIT and task.blocks > 1:
            self._split(task, err)
        elif reaction is Reaction.SPLIT and fallback:
            self._fetch_single_block(client, task, err)
        elif reaction in (Reaction.SPLIT, Reaction.EXCLUDE):
            self.board.exclude(task, self.name, failed.last_error)
        elif reaction in (Reaction.THROTTLE, Reaction.RETIRE):
            self.board.retry(failed)  # not the task's fault: its attempts stay as they were
        elif reaction is Reaction.BEHIND and self._behind(client, task):
            self.board.retry(failed)
        else:
            reaction = Reaction.RETRY
            if err.kind is ErrorKind.TIMEOUT and task.blocks > 1:
                self.window.shrink(task.blocks, task.blocks // 2, range_cap=False)
            self._hand_back(replace(failed, attempts=task.attempts + 1))
        self._endpoint_reaction(err, reaction)

    def _endpoint_reaction(self, err: RpcError, reaction: Reaction) -> None:
        """What a failure means for the endpoint: slow down, go out, or back off."""
        if reaction is Reaction.THROTTLE or err.kind in CONGESTION:
            self.concurrency.on_congestion(throttled=reaction is Reaction.THROTTLE)
        if reaction is Reaction.THROTTLE:
            pause = self.throttle.on_throttled(err.retry_after)
            detail = f"{err.message[:80]}; pausing {pause:.1f}s"
            self._set_state(EndpointStatus.THROTTLED, detail, pause)
        elif reaction is Reaction.RETIRE:
            self._retire(str(err))
        if reaction is not Reaction.RETRY:
            self.breaker.release()  # an answer about the request, not a fault of the endpoint
            return
        pause = self.throttle.on_failure(err.retry_after)
        if self.breaker.record_failure():
            cooldown = self.breaker.cooldown
            detail = f"{err}; cooling down {cooldown:.0f}s"
            self._set_state(EndpointStatus.CIRCUIT_OPEN, detail, cooldown)
        elif self.breaker.state == "closed":  # health's own state, not an endpoint's
            self._set_state(EndpointStatus.BACKING_OFF, f"{err}; pausing {pause:.1f}s", pause)

    def _split(self, task: Task, err: RpcError) -> None:
        at = split_point(task, err.hint, err.max_blocks)
        self.window.shrink(task.blocks, at - task.start + 1, err.kind is ErrorKind.RANGE_TOO_LARGE)
        if self.board.split(task, at) is not None:
            self.events.put(Split(self.name, task, at, err.kind, self.window.limit))

    def _fetch_single_block(self, client: RpcClient, task: Task, err: RpcError) -> None:
        # One block with more logs than eth_getLogs may return here: read them from its receipts.
        self._sleep(self.throttle.reserve())
        try:
            receipts = client.block_logs(task.start)
            with client.reading("the logs of eth_getBlockReceipts"):
                logs = [log for log in receipts if self.spec.log_filter.matches(log)]
                check_not_removed(logs)
                table = logs_to_table(logs, self.spec.chain_id, self.spec.hex_output)
                table = check_batch(table, task, self.spec.log_filter, self.spec.hex_output)
        except RpcError as receipts_err:
            receipts_err.message = f"eth_getBlockReceipts after {err}: {receipts_err.message}"
            self.react(client, task, receipts_err, fallback=False)
            return
        self._record(True, client, task)
        self._stamp_and_deliver(client, task, table)

    def _behind(self, client: RpcClient, task: Task) -> bool:
        """After a beyond-head error: True if the endpoint's fresh head confirms it lacks the
        blocks (the task goes back without penalty), False if it is contradicting itself."""
        self._refresh_head(client)
        with self._lock:
            behind = self.head is not None and self.head < task.end
        if behind:
            self._set_state(EndpointStatus.BEHIND, f"head {self.head}")
        return behind

    def _hand_back(self, task: Task) -> None:
        if task.attempts >= self.spec.max_attempts:
            self.board.give_up(task)
        else:
            self.board.retry(task)

    def _retire(self, reason: str) -> None:
        with self._lock:
            if self.retired:
                return
            self.retired = reason
        self.board.retire(self.name)
        self.events.put(EndpointState(self.name, EndpointStatus.OUT, reason, retired=True))

    def _record(
        self,
        ok: bool,
        client: RpcClient,
        task: Task | None,
        err: RpcError | None = None,
        reaction: Reaction | None = None,
        parser_fallback: bool = False,
    ) -> None:
        self.events.put(
            Attempt(
                self.name,
                ok,
                client.last_latency_ms,
                task_id=task.task_id if task else None,
                error_kind=err.kind if err else None,
                error=err.message if err else "",
                reaction=reaction,
                at=time.time(),
                parser_fallback=parser_fallback,
            )
        )

    def _set_state(self, state: EndpointStatus, detail: str, pause: float = 0.0) -> None:
        # A longer pause is news too: the metrics show the backoff the endpoint is in now.
        with self._lock:
            changed = (state, pause) != self._state
            self._state = (state, pause)
        if changed:
            self.events.put(EndpointState(self.name, state, detail, pause_s=pause))
