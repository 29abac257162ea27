"""Messages that cross process boundaries: small, frozen and picklable."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa


@dataclass(frozen=True)
class Task:
    """Fetch the logs of blocks start..end inclusive."""

    task_id: int
    start: int
    end: int
    attempts: int = 0
    last_error: str = ""

    @property
    def blocks(self) -> int:
        """How many blocks the task covers."""
        return self.end - self.start + 1


@dataclass(frozen=True)
class FetchedBatch:
    """Worker -> writer: every log of one task, already in columnar form."""

    task: Task
    endpoint: str
    table: pa.Table


@dataclass(frozen=True)
class Attempt:
    """Worker -> supervisor: the outcome of one RPC request."""

    endpoint: str
    ok: bool
    latency_ms: float
    task_id: int | None = None
    error_kind: str = ""
    error: str = ""


@dataclass(frozen=True)
class TaskWritten:
    """Writer -> supervisor: a task's logs are stored (path is empty when it had none)."""

    task: Task
    endpoint: str
    logs: int
    path: str


@dataclass(frozen=True)
class WriterFailed:
    """Writer -> supervisor: storing failed and the writer stopped."""

    message: str
