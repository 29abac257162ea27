"""Messages that cross process boundaries: small, frozen and picklable."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """Fetch the logs of blocks start..end inclusive."""

    task_id: int
    start: int
    end: int
    attempts: int = 0  # failed fetches so far; splits and throttling do not count
    last_error: str = ""
    excluded: frozenset[str] = frozenset()  # endpoints that cannot serve this range (pruned...)

    @property
    def blocks(self) -> int:
        """How many blocks the task covers."""
        return self.end - self.start + 1


@dataclass(frozen=True)
class FetchedBatch:
    """Worker -> writer: every log of one task, in an Arrow IPC file at `path` (the data itself
    would cost two copies through the queue process and its memory)."""

    task: Task
    endpoint: str
    path: str
    rows: int


@dataclass(frozen=True)
class Attempt:
    """Worker -> supervisor: the outcome of one RPC request."""

    endpoint: str
    ok: bool
    latency_ms: float
    task_id: int | None = None
    error_kind: str = ""
    error: str = ""
    reaction: str = ""  # what the worker did about the error (see worker.Reaction)
    at: float = 0.0  # wall-clock time the answer arrived (time.time()), for the timeline


@dataclass(frozen=True)
class Split:
    """Worker -> supervisor: a task was too big for an endpoint and was cut at block `at`."""

    endpoint: str
    task: Task
    at: int
    reason: str
    window: int | None = None  # the endpoint's request window after the split


@dataclass(frozen=True)
class EndpointState:
    """Worker -> supervisor: an endpoint changed state (active, backing off, circuit open,
    behind, out); `detail` says why, `retired` marks it out for the rest of the run."""

    endpoint: str
    state: str
    detail: str = ""
    retired: bool = False
    pause_s: float = 0.0  # the backoff or cool-down the endpoint just entered


@dataclass(frozen=True)
class TaskWritten:
    """Writer -> supervisor: a task's logs are staged durably; the task is complete."""

    task: Task
    endpoint: str
    logs: int


@dataclass(frozen=True)
class WriterFailed:
    """Writer -> supervisor: storing failed and the writer stopped."""

    message: str


@dataclass(frozen=True)
class Notice:
    """Something the user should hear about while the run goes on."""

    text: str


@dataclass(frozen=True)
class WorkerStarted:
    """A worker process is up (tests use the pid to kill it)."""

    endpoint: str
    worker_id: str
    pid: int


@dataclass(frozen=True)
class ProcessStarted:
    """The queue manager or the writer process is up (tests use the pid to kill it)."""

    role: str
    pid: int


@dataclass(frozen=True)
class RunStarted:
    """Supervisor -> console: the run's range and endpoints, before any worker starts."""

    from_block: int
    to_block: int
    todo_blocks: int  # what this run must fetch; the rest was stored by earlier runs
    endpoints: tuple[str, ...]


@dataclass(frozen=True)
class Progress:
    """Supervisor -> console and metrics, about once a second: how far the run is."""

    blocks_done: int  # stored, by this run and earlier ones
    blocks_total: int
    logs: int  # stored by this run
    queued_tasks: int  # waiting, including the part of the plan not yet cut into tasks
    tasks_in_flight: int
    elapsed_s: float
