"""Messages that cross process boundaries: small, frozen and picklable.

Also their vocabulary (EndpointStatus, Reaction; ErrorKind lives in pipeline.errors), the union of
the run events the supervisor hands to a Report, and the types of the queues that carry them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeAlias, TypeVar

from pipeline.errors import ErrorKind


class EndpointStatus(enum.StrEnum):
    """The state an endpoint is in. The values are a public contract: summary.json, the console
    and the metrics label `state` show them as they are."""

    ACTIVE = "active"
    THROTTLED = "throttled"  # the provider rate-limits us: paced slower, paused as it asked
    BACKING_OFF = "backing off"  # after an endpoint fault
    CIRCUIT_OPEN = "circuit open"  # after a run of faults: cooling down, then one probe
    BEHIND = "behind"  # its head is before the blocks still wanted
    SUSPECT = "suspect"  # it answered wrongly: everything it answers is checked again
    OUT = "out"  # retired for the rest of the run (quota, auth...)


class Reaction(enum.StrEnum):
    """What a worker does about a failed request."""

    SPLIT = "split"  # the range was too big for this endpoint: cut it, no penalty
    THROTTLE = "throttle"  # slow down this endpoint, no penalty for the task
    RETIRE = "retire"  # quota, auth, filter limits: the endpoint is out for the rest of the run
    BEHIND = "behind"  # the endpoint does not have these blocks yet
    EXCLUDE = "exclude"  # the endpoint can never serve this range (pruned history)
    RETRY = "retry"  # an endpoint fault: back off, count the attempt, let anyone retry


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
    # The worker read the header of every block with logs from its endpoint (for timestamps):
    # each of the logs' blockHash, no log outside its bloom. The checks need not read them again
    # from that endpoint.
    headed: bool = False


@dataclass(frozen=True)
class Attempt:
    """Worker -> supervisor: the outcome of one RPC request."""

    endpoint: str
    ok: bool
    latency_ms: float
    task_id: int | None = None
    error_kind: ErrorKind | None = None  # set on failures
    error: str = ""
    reaction: Reaction | None = None  # what the worker did about the error
    at: float = 0.0  # wall-clock time the answer arrived (time.time()), for the timeline
    # A 200 answer the fast parser (fastlogs) refused and the careful path read: a provider whose
    # answers all go that way costs several times the CPU per log.
    parser_fallback: bool = False


@dataclass(frozen=True)
class Split:
    """Worker -> supervisor: a task was too big for an endpoint and was cut at block `at`."""

    endpoint: str
    task: Task
    at: int
    reason: ErrorKind
    window: int | None = None  # the endpoint's request window after the split


@dataclass(frozen=True)
class EndpointState:
    """Worker -> supervisor: an endpoint changed state; `detail` says why, `retired` marks it
    out for the rest of the run."""

    endpoint: str
    state: EndpointStatus
    detail: str = ""
    retired: bool = False
    pause_s: float = 0.0  # the backoff or cool-down the endpoint just entered


@dataclass(frozen=True)
class ConcurrencyChanged:
    """Worker -> supervisor: the endpoint's requests-in-flight limit is now `limit`."""

    endpoint: str
    limit: int
    at: float  # time.time() of the change


@dataclass(frozen=True)
class Held:
    """Writer -> supervisor: an accepted batch waits for its checks before it is staged."""

    batch: FetchedBatch


@dataclass(frozen=True)
class Verdict:
    """Supervisor -> writer: stage the held batch of `task_id`, or (`ok` False) drop it and
    hand its task back, kept from `liar` (the endpoint that answered wrongly) when named."""

    task_id: int
    ok: bool
    reason: str = ""
    liar: str = ""


@dataclass(frozen=True)
class Distrust:
    """Supervisor -> writer: `endpoint` answered wrongly: whatever of its answers is staged but
    not yet in a final file is dropped, and those ranges are fetched again from others."""

    endpoint: str
    reason: str


@dataclass(frozen=True)
class Unstaged:
    """Writer -> supervisor: a stored answer of `endpoint` was dropped (it is suspect); its
    blocks are fetched again, so its logs no longer count as fetched. `earlier`: stored by an
    earlier run, whose blocks now join this run's work."""

    endpoint: str
    start: int
    end: int
    logs: int
    earlier: bool = False


class Check(enum.StrEnum):
    """What the verifier checked of an answer (summary.json counts each per endpoint)."""

    AUDIT = "audit"  # fetched again elsewhere (or read from receipts) and compared row for row
    HASH = "hash"  # its block hashes against headers from another endpoint
    BLOOM = "bloom"  # its logs against their blocks' logsBloom
    REQUEST = "request"  # a request the verifier made to this endpoint


@dataclass(frozen=True)
class Checked:
    """Verifier -> supervisor: one check of `endpoint` and whether its answer failed it; for a
    request the checks made of it, how it failed (None: answered); for a hash check, how many
    of the answer's blocks with logs a header confirmed, and how many were left out (a sample
    within --rps)."""

    endpoint: str
    check: Check
    mismatch: bool = False
    detail: str = ""
    error: ErrorKind | None = None
    confirmed: int = 0
    unconfirmed: int = 0


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
    node: str = ""  # the Ray node it runs on (--engine ray), else empty: this machine


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


# Everything the supervisor hands to a Report: what the workers and the writer send through the
# event queue, and what the supervisor says itself.
Event: TypeAlias = (
    Attempt
    | Split
    | EndpointState
    | ConcurrencyChanged
    | TaskWritten
    | Held
    | Unstaged
    | Checked
    | WriterFailed
    | Notice
    | WorkerStarted
    | ProcessStarted
    | RunStarted
    | Progress
)
Report: TypeAlias = Callable[[Event], None]

_Item = TypeVar("_Item")


class Channel(Protocol[_Item]):
    """What the processes use of a Manager queue (a proxy of queue.Queue, not one itself)."""

    def put(self, item: _Item, block: bool = True, timeout: float | None = None) -> None:
        """Add an item, waiting up to `timeout` for room (queue.Full after that)."""

    def get(self, block: bool = True, timeout: float | None = None) -> _Item:
        """Take the next item, waiting up to `timeout` (queue.Empty after that)."""

    def get_nowait(self) -> _Item:
        """Take the next item if there is one (queue.Empty if not)."""


EventQueue: TypeAlias = Channel[Event]  # workers and writer -> supervisor


class EventInbox(Protocol):
    """The supervisor's side of the children's events."""

    def get(self, block: bool = True, timeout: float | None = None) -> Event:
        """The next event, waiting up to `timeout` (queue.Empty after that)."""

    def get_nowait(self) -> Event:
        """The next event if there is one (queue.Empty if not)."""

    def settle(self, names: set[str], timeout: float) -> bool:
        """Wait up to `timeout` until every event of the exited children `names` can be got."""


# workers -> writer, and the verifier's verdicts -> writer; None: stop
ResultQueue: TypeAlias = Channel[FetchedBatch | Verdict | Distrust | None]
