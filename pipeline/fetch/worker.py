"""Worker process: one per endpoint, with --concurrency threads that each pull a task whenever the
endpoint can take one, fetch its logs, and react to the endpoint's answer.

All of an endpoint's learned state is shared by its threads: the pacing (ratecontrol.Throttle),
the circuit breaker (health), the request window (window) and the endpoint's head.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from http import HTTPStatus
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from pipeline.config.endpoints import Endpoint
from pipeline.config.settings import LogFilter
from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.convert import logs_to_table
from pipeline.fetch.fastlogs import body_to_table_in_pieces
from pipeline.fetch.health import CircuitBreaker
from pipeline.fetch.ratecontrol import Throttle
from pipeline.fetch.rpc import RawResponse, RpcClient
from pipeline.fetch.validate import check_batch, check_not_removed
from pipeline.fetch.window import RangeWindow
from pipeline.messages import (
    Attempt,
    EndpointState,
    EndpointStatus,
    EventQueue,
    FetchedBatch,
    Reaction,
    ResultQueue,
    Split,
    Task,
    WriterFailed,
)
from pipeline.plan.board import QUEUE_GONE, TaskBoard
from pipeline.plan.chunks import split_point
from pipeline.store.files import write_result
from pipeline.store.layout import incoming_path

CLAIM_WAIT_S = 0.5
HEAD_REFRESH_S = 2.0  # how stale the endpoint's head may be before we ask again when we need it
EXIT_RETIRED = 3  # the endpoint is out for the rest of the run: the supervisor must not restart it
EXIT_CRASHED = 70
# Big answers are parsed a piece at a time (parsing peaks near 3x what it reads). Splitting the
# range instead would make the provider build the whole answer again.
PARSE_PIECE_BYTES = 16 << 20  # about 30,000 logs


# What a worker does about each error class (see messages.Reaction); any other class: RETRY.
REACTIONS: dict[ErrorKind, Reaction] = {
    ErrorKind.RANGE_TOO_LARGE: Reaction.SPLIT,
    ErrorKind.TOO_MANY_RESULTS: Reaction.SPLIT,
    ErrorKind.RESPONSE_TOO_BIG: Reaction.SPLIT,
    ErrorKind.RATE_LIMITED: Reaction.THROTTLE,
    ErrorKind.QUOTA: Reaction.RETIRE,
    ErrorKind.UNAUTHORIZED: Reaction.RETIRE,
    ErrorKind.TOO_MANY_FILTERS: Reaction.RETIRE,
    ErrorKind.BEYOND_HEAD: Reaction.BEHIND,
    ErrorKind.PRUNED: Reaction.EXCLUDE,
}


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to know; sent once when it starts."""

    worker_id: str
    endpoint: Endpoint
    log_filter: LogFilter
    chain_id: int
    hex_output: bool
    timeout: float
    max_attempts: int
    output: Path = Path()  # the output folder: results are left in its incoming folder
    to_block: int = 0  # the run's last block
    head: int | None = None  # the endpoint's head at preflight (None: it did not answer)


def worker_main(
    spec: WorkerSpec, board: TaskBoard, results: ResultQueue, events: EventQueue
) -> None:
    """Run the endpoint's threads until the board closes; exit EXIT_RETIRED if it was retired."""
    worker = EndpointWorker(spec, board, results, events)
    threads = [
        threading.Thread(target=worker.guarded_loop, name=f"fetch-{i}", daemon=True)
        for i in range(spec.endpoint.concurrency)
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
        self, spec: WorkerSpec, board: TaskBoard, results: ResultQueue, events: EventQueue
    ) -> None:
        self.spec = spec
        self.name = spec.endpoint.name
        self.board, self.results, self.events = board, results, events
        self.throttle = Throttle(spec.endpoint.rps)
        self.breaker = CircuitBreaker()
        self.window = RangeWindow(spec.endpoint.max_blocks)
        self.head = spec.head
        self.head_checked = 0.0 if spec.head is None else time.monotonic()
        self.retired = ""
        self.stopped = False  # the results cannot be written: leave the run to the supervisor
        self._state = (EndpointStatus.ACTIVE, 0.0)
        self._lock = threading.Lock()

    def guarded_loop(self) -> None:
        """The fetch loop; a lost queue ends the process quietly, any other crash loudly, so
        that the supervisor requeues this endpoint's leases either way."""
        try:
            self.loop(RpcClient(self.spec.endpoint, self.spec.timeout))
        except QUEUE_GONE:
            os._exit(0)  # the supervisor reports a lost queue itself
        except BaseException:
            traceback.print_exc()
            os._exit(EXIT_CRASHED)

    def loop(self, client: RpcClient) -> None:
        """Claim, fetch, hand over; exit once the board is closed or the endpoint retired."""
        while not (self.retired or self.stopped):
            wait = self.throttle.paused_for() or self.breaker.admit()
            if wait > 0:
                if self._sleep(wait):
                    break
                continue
            if self.head is None or self._head_stale():
                self._refresh_head(client)
                continue
            task = self.board.claim(self.spec.worker_id, CLAIM_WAIT_S, self.window.limit, self.head)
            if task is None:
                self.breaker.release()
                if self.board.closed():
                    break
                continue
            if self._sleep(self.throttle.reserve()):
                self.board.retry(task)
                break
            self.fetch(client, task)
        client.close()

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
        """Fetch one leased task and hand the result to the writer, or react to the failure."""
        try:
            fetched = fetch_range(client, task, self.spec)
        except RpcError as err:
            self.react(client, task, err)
            return
        self._deliver(client, task, fetched.table, fetched.parser_fallback)

    def _deliver(
        self, client: RpcClient, task: Task, table: pa.Table, parser_fallback: bool = False
    ) -> None:
        self.throttle.on_success()
        self.breaker.record_success()
        self._set_state(EndpointStatus.ACTIVE, "")
        self.window.succeeded(task.blocks)
        self._record(True, client, task, parser_fallback=parser_fallback)
        # The lease stays ours until the writer has stored the batch: if we die now, it is redone.
        path = incoming_path(self.spec.output, os.getpid(), task.task_id)
        try:
            write_result(table, path)
        except OSError as exc:
            path.unlink(missing_ok=True)
            self.board.retry(task)
            # The disk is the writer's business: say it once, as the writer would, and stop.
            self.events.put(WriterFailed(f"cannot write to {self.spec.output}: {exc.strerror}"))
            self.stopped = True
            return
        self.results.put(FetchedBatch(task, self.name, str(path), table.num_rows))

    def react(self, client: RpcClient, task: Task, err: RpcError, fallback: bool = True) -> None:
        """Do what the error class calls for (see Reaction)."""
        reaction = REACTIONS.get(err.kind, Reaction.RETRY)
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
            wanted = self.spec.log_filter.matches
            logs = [log for log in client.block_logs(task.start) if wanted(log)]
            check_not_removed(logs)
            table = logs_to_table(logs, self.spec.chain_id, self.spec.hex_output)
            check_batch(table, task, self.spec.log_filter, self.spec.hex_output)
        except RpcError as receipts_err:
            receipts_err.message = f"eth_getBlockReceipts after {err}: {receipts_err.message}"
            self.react(client, task, receipts_err, fallback=False)
            return
        self._deliver(client, task, table)

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


class RangeLogs(NamedTuple):
    """One task's logs, and whether the fast parser refused the 200 answer they came in."""

    table: pa.Table
    parser_fallback: bool


def fetch_range(client: RpcClient, task: Task, spec: WorkerSpec) -> RangeLogs:
    """Fetch and convert one task's logs, refusing any answer that is not exactly that range."""
    response = client.post("eth_getLogs", [spec.log_filter.rpc_params(task.start, task.end)])
    # The fast path reads plain answers without a Python object per log; anything else (errors,
    # odd formatting) goes the careful way, which also says what is wrong with it.
    if response.status != HTTPStatus.OK:
        return RangeLogs(_careful_table(client, response, task, spec), parser_fallback=False)
    table = body_to_table_in_pieces(
        response.body, spec.chain_id, spec.hex_output, PARSE_PIECE_BYTES
    )
    if table is None:
        # Counted only once the careful path took the answer: a refused error body is already
        # counted as a failure of its class.
        return RangeLogs(_careful_table(client, response, task, spec), parser_fallback=True)
    check_batch(table, task, spec.log_filter, spec.hex_output)
    return RangeLogs(table, parser_fallback=False)


def _careful_table(
    client: RpcClient, response: RawResponse, task: Task, spec: WorkerSpec
) -> pa.Table:
    """The careful path: orjson and one dict per log; raises the RpcError the answer means."""
    logs = client.logs_result(response)
    check_not_removed(logs)
    table = logs_to_table(logs, spec.chain_id, spec.hex_output)
    check_batch(table, task, spec.log_filter, spec.hex_output)
    return table
