"""What a worker process is told when it starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config.endpoints import Endpoint
from pipeline.config.settings import LogFilter


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
    verify: bool = False  # near its head, an answer must prove it (pipeline.verify.headproof)
