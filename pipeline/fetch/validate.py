"""Trust nothing an endpoint returns: a batch must be exactly the logs asked for."""

from __future__ import annotations

from operator import methodcaller

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config.settings import LogFilter
from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.convert import TOPIC_COLUMNS, in_log_order
from pipeline.messages import Task


def check_batch(table: pa.Table, task: Task, log_filter: LogFilter, hex_output: bool) -> pa.Table:
    """`table` in log order (block, then log index); raise a MALFORMED RpcError unless every
    log lies in the task's range, matches the filter, and appears once."""
    if not table.num_rows:
        return table
    if table["block_number"].null_count or table["log_index"].null_count:
        _reject("returned logs without a block number or log index")
    table, keys = in_log_order(table)
    first, last = int(keys[0] >> 32), int(keys[-1] >> 32)
    if first < task.start or last > task.end:
        _reject(f"returned blocks {first}-{last} for {task.start}-{task.end}")
    if bool(np.any(keys[1:] == keys[:-1])):
        _reject("returned the same log twice")
    for column, values in _wanted(log_filter):
        if not pc.all(pc.is_in(table[column], _value_set(values, hex_output))).as_py():
            _reject(f"returned logs whose {column} does not match the filter")
    return table


def matching(table: pa.Table, log_filter: LogFilter, hex_output: bool) -> pa.Table:
    """The rows of `table` that the filter matches (logs read from block receipts hold every
    log of their blocks)."""
    for column, values in _wanted(log_filter):
        table = table.filter(pc.is_in(table[column], _value_set(values, hex_output)))
    return table


def _wanted(log_filter: LogFilter) -> list[tuple[str, tuple[str, ...]]]:
    """The filter's conditions: a column, and the values one of which it must hold."""
    columns = [
        ("address", log_filter.addresses),
        *zip(TOPIC_COLUMNS, log_filter.topics, strict=True),
    ]
    return [(column, values) for column, values in columns if values]


def check_not_removed(logs: list[dict]) -> None:
    """Raise a MALFORMED RpcError if the endpoint returned logs marked removed by a reorg: they
    are not on the canonical chain (an endpoint mid-reorg; another attempt will see it settled)."""
    if not all(isinstance(log, dict) for log in logs):
        _reject("returned something that is not a log object where a log belongs")
    if any(map(methodcaller("get", "removed"), logs)):
        _reject("returned logs marked removed (a reorg in progress)")


def _value_set(values: tuple[str, ...], hex_output: bool) -> pa.Array:
    if hex_output:
        return pa.array(values, pa.string())
    return pa.array([bytes.fromhex(v[2:]) for v in values], pa.binary())


def _reject(reason: str) -> None:
    raise RpcError(ErrorKind.MALFORMED, reason)
