"""Worker process: one per endpoint; pulls a task whenever it is free and fetches its logs."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import pyarrow as pa

from .config import LogFilter
from .convert import logs_to_table
from .endpoints import Endpoint
from .errors import RpcError
from .lifecycle import init_child
from .messages import Attempt, FetchedBatch, Task
from .ratecontrol import Backoff
from .rpc import RpcClient
from .taskqueue import QUEUE_GONE
from .validate import check_batch

CLAIM_WAIT_S = 0.5


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
    supervisor_pid: int


def worker_main(spec: WorkerSpec, board, results, events) -> None:
    """Claim, fetch, hand over; on failure hand the task back and back off; exit once the
    board is closed."""
    init_child(spec.supervisor_pid)
    with contextlib.suppress(*QUEUE_GONE):  # the supervisor reports a lost queue itself
        _work(spec, board, results, events)


def _work(spec: WorkerSpec, board, results, events) -> None:
    client = RpcClient(spec.endpoint, spec.timeout)
    backoff = Backoff()
    name = spec.endpoint.name
    while True:
        task = board.claim(spec.worker_id, CLAIM_WAIT_S)
        if task is None:
            if board.closed():
                break
            continue
        try:
            table = fetch_task(client, task, spec)
        except RpcError as err:
            events.put(
                Attempt(
                    name, False, client.last_latency_ms, task.task_id, err.kind.value, err.message
                )
            )
            _hand_back(
                board, replace(task, attempts=task.attempts + 1, last_error=f"{name}: {err}"), spec
            )
            if board.wait_closed(backoff.next_delay(err.retry_after)):
                break
            continue
        backoff.reset()
        events.put(Attempt(name, True, client.last_latency_ms, task.task_id))
        # The lease stays ours until the writer has stored the batch: if we die now, it is redone.
        results.put(FetchedBatch(task, name, table))
    client.close()


def _hand_back(board, task: Task, spec: WorkerSpec) -> None:
    if task.attempts >= spec.max_attempts:
        board.give_up(task)
    else:
        board.retry(task)


def fetch_task(client: RpcClient, task: Task, spec: WorkerSpec) -> pa.Table:
    """Fetch and convert one task's logs, refusing any answer that is not exactly that range."""
    logs = client.get_logs(spec.log_filter.rpc_params(task.start, task.end))
    table = logs_to_table(logs, spec.chain_id, spec.hex_output)
    check_batch(table, task, spec.log_filter, spec.hex_output)
    return table
