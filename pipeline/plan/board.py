"""The shared task queue: lives in a multiprocessing.Manager process, so every call is atomic.

A task leaves the queue on a lease held by the worker that claimed it. The lease ends only when
the writer has stored the task, when the worker hands it back, or when the supervisor releases the
leases of a dead worker. A worker killed at any instant therefore never loses a task.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from multiprocessing.managers import SyncManager

from pipeline.messages import Task
from pipeline.plan.chunks import ChunkPlan


@dataclass(frozen=True)
class BoardState:
    """A consistent snapshot of the queue's counters."""

    pending: int
    leased: int  # being fetched, or fetched and held by the writer (`held` of them)
    done: int
    failed: int
    closed: bool
    held: int = 0  # fetched, and waiting for their checks

    @property
    def settled(self) -> bool:
        """No task is waiting or in flight (everything done, failed, or held back by close)."""
        return self.leased == 0 and (self.pending == 0 or self.closed)

    @property
    def fetching(self) -> bool:
        """Some task is waiting or being fetched (not only checked)."""
        return self.leased > self.held or (self.pending > 0 and not self.closed)


class TaskBoard:
    """Pending tasks, leases, completions and give-ups, guarded by one lock.

    A task that is cut (to an endpoint's window or head, or split after a range error) is
    replaced by pieces with new ids, so a late batch for the old id can never be stored as well.
    """

    def __init__(self, plan: ChunkPlan, endpoints: Iterable[str] = ()) -> None:
        self._cond = threading.Condition()
        self._plan = plan
        self._pending: deque[Task] = deque()  # handed back, split or released: served first
        self._leases: dict[int, tuple[str, Task]] = {}
        self._storing: dict[int, Task] = {}  # accepted by the writer, not yet on disk
        self._done = 0
        self._failed: dict[int, Task] = {}
        self._live_endpoints = set(endpoints)
        self._retired: set[str] = set()
        self._closed = False
        # Calls the verifier made of an endpoint's --rps, for its worker to book (lend/debt).
        self._debts: dict[str, int] = {}

    def claim(
        self,
        worker: str,
        timeout: float,
        max_blocks: int | None = None,
        max_end: int | None = None,
    ) -> Task | None:
        """Lease the next task `worker` can serve: at most `max_blocks` long and ending at or
        before `max_end` (its head); None if none comes within `timeout` or after close."""
        endpoint = endpoint_of(worker)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                task = self._pick(endpoint, max_end)
                if task is not None:
                    task = self._cut(task, max_blocks, max_end)
                    self._leases[task.task_id] = (worker, task)
                    return task
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return None

    def _pick(self, endpoint: str, max_end: int | None) -> Task | None:
        if endpoint in self._retired:
            return None
        for index, task in enumerate(self._pending):
            if endpoint not in task.excluded and (max_end is None or task.start <= max_end):
                del self._pending[index]
                return task
        start = self._plan.next_start
        if self._plan.remaining() and (max_end is None or start <= max_end):
            return self._plan.take()
        return None

    def _cut(self, task: Task, max_blocks: int | None, max_end: int | None) -> Task:
        end = task.end
        if max_blocks is not None:
            end = min(end, task.start + max(1, max_blocks) - 1)
        if max_end is not None:
            end = min(end, max_end)
        if end == task.end:
            return task
        head, rest = self._pieces(task, end)
        self._pending.appendleft(rest)
        return head

    def _pieces(self, task: Task, at: int) -> tuple[Task, Task]:
        head = replace(task, task_id=self._new_id(), end=at)
        rest = replace(task, task_id=self._new_id(), start=at + 1)
        return head, rest

    def _new_id(self) -> int:
        self._plan.next_id += 1
        return self._plan.next_id - 1

    def waiting_beyond(self, block: int) -> bool:
        """True if some unclaimed work lies past `block` (an endpoint's head)."""
        with self._cond:
            if self._plan.remaining() and self._plan.end > block:
                return True
            return any(task.end > block for task in self._pending)

    def split(self, task: Task, at: int) -> tuple[Task, Task] | None:
        """Replace a leased task by start..at and at+1..end, both back on the queue (first
        piece first); None if the lease is gone or `at` is not inside the task."""
        with self._cond:
            if not task.start <= at < task.end or self._leases.pop(task.task_id, None) is None:
                return None
            head, rest = self._pieces(task, at)
            self._pending.extendleft((rest, head))
            self._cond.notify_all()
            return head, rest

    def retry(self, task: Task) -> None:
        """Hand a task back (with updated attempts/error); it goes to the front of the queue."""
        with self._cond:
            if self._leases.pop(task.task_id, None) is not None:
                self._pending.appendleft(task)
                self._cond.notify_all()

    def exclude(self, task: Task, endpoint: str, reason: str) -> bool:
        """Hand a task back that `endpoint` cannot serve at all; it fails when no live endpoint
        is left for it. Returns False if it failed."""
        with self._cond:
            if self._leases.pop(task.task_id, None) is None:
                return True
            task = replace(task, excluded=task.excluded | {endpoint}, last_error=reason)
            if self._live_endpoints <= task.excluded:
                self._failed[task.task_id] = task
                return False
            self._pending.appendleft(task)
            self._cond.notify_all()
            return True

    def retire(self, endpoint: str, fail_rest: bool = False) -> None:
        """Take an endpoint out for the rest of the run; tasks only it could serve fail, and
        with `fail_rest` the uncut plan too once no endpoint is left (the verifier's call: the
        endpoint's worker does not leave by itself)."""
        with self._cond:
            self._live_endpoints.discard(endpoint)
            self._retired.add(endpoint)
            stranded = [t for t in self._pending if self._live_endpoints <= t.excluded]
            if fail_rest and not self._live_endpoints:  # nobody is left for the uncut plan
                stranded += [replace(t, task_id=self._new_id()) for t in self._plan.rest()]
                self._plan.drop()
            for task in stranded:
                if task in self._pending:
                    self._pending.remove(task)
                self._failed[task.task_id] = task
            self._cond.notify_all()

    def give_up(self, task: Task) -> None:
        """Record a task as failed for good (its attempts are used up)."""
        with self._cond:
            if self._leases.pop(task.task_id, None) is not None:
                self._failed[task.task_id] = task

    def accept(self, task_id: int, rows: int | None = None) -> bool:
        """The writer asks to store a batch of `rows` logs: True (and nobody else may fetch it
        any more) unless the task was already stored, given up, or replaced by pieces. The plan
        sizes the next tasks from `rows` at once, not when the checks are done."""
        with self._cond:
            lease = self._leases.pop(task_id, None)
            task = lease[1] if lease else self._take_pending(task_id)
            if task is None:
                return False
            self._storing[task_id] = task
            if rows is not None:
                self._plan.learn(task.blocks, rows)
            return True

    def reject(self, task_id: int, liar: str, reason: str, max_attempts: int | None) -> None:
        """An accepted task's answer failed its checks: hand the task back, kept from `liar`
        while another live endpoint can serve it; it fails once its `max_attempts` are used up.
        None: its endpoint was found lying before the checks ended, which costs it no attempt."""
        with self._cond:
            task = self._storing.pop(task_id, None)
            if task is None:
                return
            counted = max_attempts is not None
            task = replace(
                task,
                attempts=task.attempts + counted,
                last_error=reason,
                excluded=self._keep_from(task.excluded, liar),
            )
            used_up = counted and task.attempts >= max_attempts
            if used_up or not self._live_endpoints:
                self._failed[task.task_id] = task
            else:
                self._pending.appendleft(task)
            self._cond.notify_all()

    def reopen(self, start: int, end: int, liar: str, reason: str) -> None:
        """Fetch blocks start..end again (an endpoint's stored answers there were dropped), in
        tasks of the plan's size (an earlier run's whole file may come back), kept from `liar`
        while another live endpoint can serve them."""
        with self._cond:
            size = self._plan.size()
            for lo in reversed(range(start, end + 1, size)):  # served first, in block order
                task = Task(self._new_id(), lo, min(end, lo + size - 1), last_error=reason)
                task = replace(task, excluded=self._keep_from(frozenset(), liar))
                if self._live_endpoints:
                    self._pending.appendleft(task)
                else:  # the last endpoint was taken out meanwhile
                    self._failed[task.task_id] = task
            self._cond.notify_all()

    def _keep_from(self, excluded: frozenset[str], liar: str) -> frozenset[str]:
        if liar and self._live_endpoints - excluded - {liar}:
            return excluded | {liar}
        return excluded  # nobody else is left: the liar may try again, checked in full

    def _take_pending(self, task_id: int) -> Task | None:
        for task in self._pending:
            if task.task_id == task_id:
                self._pending.remove(task)
                return task
        return None

    def complete(self, task_id: int) -> None:
        """The writer stored an accepted task."""
        with self._cond:
            if self._storing.pop(task_id, None) is not None:
                self._done += 1
                self._cond.notify_all()

    def release(self, worker: str) -> int:
        """Requeue every task leased to a dead worker; return how many."""
        with self._cond:
            lost = [task for owner, task in self._leases.values() if owner == worker]
            for task in lost:
                del self._leases[task.task_id]
                self._pending.appendleft(task)
            self._cond.notify_all()
            return len(lost)

    def lend(self, endpoint: str, calls: int) -> None:
        """The verifier made `calls` calls of `endpoint`: its worker books them within --rps."""
        with self._cond:
            self._debts[endpoint] = self._debts.get(endpoint, 0) + calls

    def debt(self, endpoint: str) -> int:
        """Calls the verifier made of `endpoint` since the last time its worker asked."""
        with self._cond:
            return self._debts.pop(endpoint, 0)

    def closed(self) -> bool:
        """True once close() or abort() was called: workers should leave."""
        with self._cond:
            return self._closed

    def wait_closed(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, waking early (and returning True) on close."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed, timeout)

    def close(self) -> None:
        """Stop handing out tasks; leased ones may still finish."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self, reason: str) -> None:
        """Close and record every pending task as failed with `reason`."""
        with self._cond:
            self._closed = True
            rest = [replace(t, task_id=self._new_id()) for t in self._plan.rest()]
            self._plan.drop()
            for task in [*self._pending, *rest]:
                self._failed[task.task_id] = replace(task, last_error=task.last_error or reason)
            self._pending.clear()
            self._cond.notify_all()

    def state(self) -> BoardState:
        """Snapshot of the counters."""
        with self._cond:
            return BoardState(
                len(self._pending) + self._plan.remaining(),
                len(self._leases) + len(self._storing),
                self._done,
                len(self._failed),
                self._closed,
                len(self._storing),
            )

    def unfinished(self) -> tuple[list[Task], list[Task]]:
        """(failed tasks, tasks never fetched) in block order."""
        with self._cond:
            leased = [task for _, task in self._leases.values()]
            rest = self._plan.rest()
            return (
                sorted(self._failed.values(), key=lambda t: t.start),
                sorted(
                    [*self._pending, *leased, *self._storing.values(), *rest],
                    key=lambda t: t.start,
                ),
            )


def endpoint_of(worker: str) -> str:
    """The endpoint name in a worker id `NAME#RESTARTS`."""
    return worker.rsplit("#", 1)[0]


# What a call through a Manager proxy raises once the Manager process is gone: a thread's
# first call opens its own connection, and finds the socket file removed.
QUEUE_GONE = (EOFError, ConnectionError, FileNotFoundError)


class QueueManager(SyncManager):
    """A Manager that also hosts the TaskBoard."""


QueueManager.register("TaskBoard", TaskBoard)
