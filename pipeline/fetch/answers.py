"""One eth_getLogs answer read into a checked table: the fast parsers first (the C one, then
numpy), the careful one (orjson, one dict per log) for anything they refuse."""

from __future__ import annotations

from http import HTTPStatus
from typing import NamedTuple

import pyarrow as pa

from pipeline.fetch.convert import logs_to_table
from pipeline.fetch.inbox import Inbox
from pipeline.fetch.nativelogs import body_to_table_in_pieces
from pipeline.fetch.rpc import RawResponse, RpcClient
from pipeline.fetch.spec import WorkerSpec
from pipeline.fetch.validate import check_batch, check_not_removed
from pipeline.messages import Task

# Big answers the numpy parser reads a piece at a time (it peaks near 3x what it reads); the C
# parser needs less than the body and reads it whole. Splitting the range instead would make the
# provider build the whole answer again.
PARSE_PIECE_BYTES = 16 << 20  # about 30,000 logs


class RangeLogs(NamedTuple):
    """One task's logs, and whether the fast parser refused the 200 answer they came in."""

    table: pa.Table
    parser_fallback: bool


def fetch_range(
    client: RpcClient, task: Task, spec: WorkerSpec, inbox: Inbox | None = None
) -> RangeLogs:
    """Fetch and convert one task's logs, refusing any answer that is not exactly that range:
    whatever goes wrong reading it is an RpcError (a malformed answer, unless classified).
    The answer is read into `inbox` (by default the client's)."""
    params = [spec.log_filter.rpc_params(task.start, task.end)]
    response = client.post("eth_getLogs", params, into=inbox or client.inbox)
    with client.reading("the eth_getLogs answer"):
        return _read_logs(client, response, task, spec)


def _read_logs(client: RpcClient, response: RawResponse, task: Task, spec: WorkerSpec) -> RangeLogs:
    # The fast path reads plain answers without a Python object per log; anything else (errors,
    # odd formatting) goes the careful way, which also says what is wrong with it. The body may
    # be the client's reused buffer (post): what must outlive this call gets its own.
    if response.status != HTTPStatus.OK:
        return RangeLogs(_careful_table(client, response.owned(), task, spec), False)
    table = body_to_table_in_pieces(
        response.body, spec.chain_id, spec.hex_output, PARSE_PIECE_BYTES
    )
    if table is None:
        # Counted only once the careful path took the answer: a refused error body is already
        # counted as a failure of its class.
        careful = _careful_table(client, response.owned(), task, spec)
        return RangeLogs(careful, parser_fallback=True)
    return RangeLogs(check_batch(table, task, spec.log_filter, spec.hex_output), False)


def _careful_table(
    client: RpcClient, response: RawResponse, task: Task, spec: WorkerSpec
) -> pa.Table:
    """The careful path: orjson and one dict per log; raises the RpcError the answer means."""
    logs = client.logs_result(response)
    check_not_removed(logs)
    table = logs_to_table(logs, spec.chain_id, spec.hex_output)
    return check_batch(table, task, spec.log_filter, spec.hex_output)
