"""Row-for-row comparison of two answers for the same blocks, and the one-endpoint audit method:
the logs of a few blocks read from eth_getBlockReceipts and filtered here."""

from __future__ import annotations

import random
from collections import defaultdict
from http import HTTPStatus

import numpy as np
import orjson
import pyarrow as pa

from pipeline.config.settings import LogFilter
from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.classify import classify_rpc_error, decode_response
from pipeline.fetch.convert import logs_to_table
from pipeline.fetch.nativelogs import body_to_table
from pipeline.fetch.rpc import RpcClient, batch_index
from pipeline.fetch.validate import check_not_removed, matching
from pipeline.plan.chunks import TARGET_LOGS

# What an answer says of the chain: block_timestamp and chain_id are ours, not the provider's.
KEY_COLUMNS = (
    "block_number",
    "block_hash",
    "transaction_index",
    "transaction_hash",
    "log_index",
    "address",
    "topic0",
    "topic1",
    "topic2",
    "topic3",
    "data",
)
RECEIPT_BLOCKS = 20  # blocks one receipts audit of a trusted endpoint reads
# Logs of an answer whose blocks' receipts one audit of a new or suspect endpoint reads: a whole
# answer of the planned size (plan.chunks.TARGET_LOGS), a sample of the blocks of a larger one.
AUDIT_LOGS = TARGET_LOGS


def comparable(table: pa.Table, blocks: set[int] | None = None) -> pa.Table:
    """The key columns in block and log order, only of `blocks` when given."""
    keyed = table.select(list(KEY_COLUMNS))
    if blocks is not None:
        mask = pa.compute.is_in(keyed["block_number"], pa.array(sorted(blocks), pa.uint64()))
        keyed = keyed.filter(mask)
    return keyed.sort_by([("block_number", "ascending"), ("log_index", "ascending")])


def differing_blocks(a: pa.Table, b: pa.Table, blocks: set[int] | None = None) -> list[int]:
    """The blocks whose logs differ between two answers (only `blocks`, when given)."""
    left, right = comparable(a, blocks), comparable(b, blocks)
    if left.num_rows == right.num_rows and left.equals(right):
        return []  # the usual case: no Python object per log
    ours, theirs = _by_block(left), _by_block(right)  # only here: answers that differ
    return sorted(n for n in ours.keys() | theirs.keys() if ours.get(n) != theirs.get(n))


def _by_block(table: pa.Table) -> dict[int, list[tuple]]:
    rows: dict[int, list[tuple]] = defaultdict(list)
    columns = [table[name].to_pylist() for name in KEY_COLUMNS]
    for row in zip(*columns, strict=True):
        rows[row[0]].append(row)
    return rows


def index_gaps(table: pa.Table) -> list[int]:
    """The blocks of an answer in log order whose log indexes are not 0, 1, 2 ...: where every
    log of a block was asked for, one is missing there (or the chain numbers logs its own way,
    which the receipts then show)."""
    if not table.num_rows:
        return []
    blocks = table["block_number"].to_numpy()
    first = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
    position = np.arange(len(blocks)) - np.repeat(first, np.diff(np.r_[first, len(blocks)]))
    gapped = table["log_index"].to_numpy().astype(np.int64) != position
    return np.unique(blocks[gapped]).tolist()


def blocks_within(table: pa.Table, blocks: range, most_logs: int, rng: random.Random) -> list[int]:
    """`blocks` in random order, as many as hold at most `most_logs` of the answer's logs (at
    least one): the receipts of a block hold every log of it, and are read whole."""
    counts = table.group_by("block_number").aggregate([("block_number", "count")])
    logs = dict(
        zip(
            counts["block_number"].to_pylist(),
            counts["block_number_count"].to_pylist(),
            strict=True,
        )
    )
    chosen, total = [], 0
    for block in rng.sample(blocks, len(blocks)):
        if total + logs.get(block, 0) <= most_logs or not chosen:
            chosen.append(block)
            total += logs.get(block, 0)
    return chosen


def receipts_table(
    client: RpcClient,
    blocks: list[int],
    log_filter: LogFilter,
    chain_id: int,
    hex_output: bool,
) -> pa.Table:
    """The logs of `blocks` matching the filter, from eth_getBlockReceipts: one batch, or a
    plain call for one block (some endpoints take no batch)."""
    logs = client.block_logs(blocks[0]) if len(blocks) == 1 else _batch_logs(client, blocks)
    with client.reading("the block receipts"):
        check_not_removed(logs)
        return matching(_table_of(logs, chain_id, hex_output), log_filter, hex_output)


def _table_of(logs: list[dict], chain_id: int, hex_output: bool) -> pa.Table:
    """The logs as a table: written back as an eth_getLogs answer for the fast parsers (no
    Python object per log), or one by one when they refuse it."""
    body = orjson.dumps({"jsonrpc": "2.0", "id": 0, "result": logs})
    table = body_to_table(body, chain_id, hex_output)
    return table if table is not None else logs_to_table(logs, chain_id, hex_output)


def _batch_logs(client: RpcClient, blocks: list[int]) -> list[dict]:
    calls = [
        {"jsonrpc": "2.0", "id": i, "method": "eth_getBlockReceipts", "params": [hex(b)]}
        for i, b in enumerate(blocks)
    ]
    response = client.post_batch(calls)
    with client.reading("the receipts of several blocks"):
        answers = orjson.loads(response.body) if response.status == HTTPStatus.OK else None
        if not isinstance(answers, list):
            decode_response(response.status, response.headers, response.body)  # raises its error
            raise RpcError(ErrorKind.MALFORMED, "a batch of receipts was answered with one result")
        by_id = {batch_index(a, len(blocks)): a for a in answers}
        logs = []
        for at, block in enumerate(blocks):
            answer = by_id.get(at)
            if answer is None:
                raise RpcError(ErrorKind.MALFORMED, "a call of the receipts batch was not answered")
            if answer.get("error") is not None:
                raise classify_rpc_error(answer["error"], response.status, response.headers)
            logs += _logs_of(answer.get("result"), block)
        return logs


def _logs_of(receipts: object, block: int) -> list[dict]:
    if receipts is None:
        raise RpcError(ErrorKind.BEYOND_HEAD, f"the endpoint has no receipts of block {block}")
    if not isinstance(receipts, list) or not all(isinstance(r, dict) for r in receipts):
        raise RpcError(ErrorKind.MALFORMED, "eth_getBlockReceipts did not return receipts")
    logs = [log for receipt in receipts for log in receipt.get("logs") or ()]
    if not all(isinstance(log, dict) for log in logs):
        raise RpcError(ErrorKind.MALFORMED, "eth_getBlockReceipts returned malformed logs")
    return logs
