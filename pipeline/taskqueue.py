"""The shared task queue: lives in a multiprocessing.Manager process, so every call is atomic.

A task leaves the queue on a lease held by the worker that claimed it. The lease ends only when
the writer has stored the task, when the worker hands it back, or when the supervisor releases the
leases of a dead worker. A worker killed at any instant therefore never loses a task.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.managers import SyncManager

from .messages import Task
from .planning import ChunkPlan


@dataclass(frozen=True)
class BoardState:
    """A consistent snapshot of the queue's counters."""

    pending: int
    leased: int
    done: int
    failed: int
    closed: bool

    @property
    def settled(self) -> bool:
        """No task is waiting or in flight (everything done, failed, or held back by close)."""
        return self.leased == 0 and (self.pending == 0 or self.closed)


class TaskBoard:
    """Pending tasks, leases, completions and give-ups, guarded by one lock."""

    def __init__(self, plan: ChunkPlan) -> None:
        self._cond = threading.Condition()
        self._plan = plan
        self._pending: deque[Task] = deque()  # handed back or released: served before new ones
        self._leases: dict[int, tuple[str, Task]] = {}
        self._done: set[int] = set()
        self._failed: dict[int, Task] = {}
        self._closed = False

    def claim(self, worker: str, timeout: float) -> Task | None:
        """Lease the next task to `worker`; None if none comes within `timeout` or after close."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._has_pending(), timeout):
                return None
            while not self._closed:
                task = self._pending.popleft() if self._pending else self._plan.take()
                if task is None:
                    return None
                # A released task may have been stored meanwhile from the dead worker's batch.
                if task.task_id not in self._done:
                    self._leases[task.task_id] = (worker, task)
                    return task
            return None

    def _has_pending(self) -> bool:
        return bool(self._pending) or self._plan.remaining() > 0

    def retry(self, task: Task) -> None:
        """Hand a task back after a failed fetch; it goes to the front so any worker retries it."""
        with self._cond:
            if self._leases.pop(task.task_id, None) is not None:
                self._pending.appendleft(task)
                self._cond.notify()

    def give_up(self, task: Task) -> None:
        """Record a task as failed for good (its attempts are used up)."""
        with self._cond:
            if self._leases.pop(task.task_id, None) is not None:
                self._failed[task.task_id] = task

    def is_done(self, task_id: int) -> bool:
        """True once the writer has stored the task."""
        with self._cond:
            return task_id in self._done

    def complete(self, task_id: int) -> None:
        """The writer stored the task: end its lease for good."""
        with self._cond:
            self._leases.pop(task_id, None)
            self._done.add(task_id)

    def release(self, worker: str) -> int:
        """Requeue every task leased to a dead worker; return how many."""
        with self._cond:
            lost = [task for owner, task in self._leases.values() if owner == worker]
            for task in lost:
                del self._leases[task.task_id]
                self._pending.appendleft(task)
            self._cond.notify_all()
            return len(lost)

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
            rest = self._plan.rest()
            self._plan.next_start = self._plan.end + 1
            for task in [*self._pending, *([rest] if rest else [])]:
                self._failed[task.task_id] = replace(task, last_error=task.last_error or reason)
            self._pending.clear()
            self._cond.notify_all()

    def state(self) -> BoardState:
        """Snapshot of the counters."""
        with self._cond:
            return BoardState(
                len(self._pending) + self._plan.remaining(),
                len(self._leases),
                len(self._done),
                len(self._failed),
                self._closed,
            )

    def unfinished(self) -> tuple[list[Task], list[Task]]:
        """(failed tasks, tasks never fetched) in block order."""
        with self._cond:
            leased = [task for _, task in self._leases.values()]
            rest = self._plan.rest()
            return (
                sorted(self._failed.values(), key=lambda t: t.start),
                sorted([*self._pending, *leased, *([rest] if rest else [])], key=lambda t: t.start),
            )


# What a call through a Manager proxy raises once the Manager process is gone.
QUEUE_GONE = (EOFError, ConnectionError)


class QueueManager(SyncManager):
    """A Manager that also hosts the TaskBoard."""


QueueManager.register("TaskBoard", TaskBoard)
