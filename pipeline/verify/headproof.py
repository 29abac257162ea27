"""Near its head, an answer must prove that the backend which answered has the blocks.

A load balancer may take eth_blockNumber from an up-to-date backend and eth_getLogs from one that
trails it: that one answers `[]` (or only part) for the newest blocks, with no error. So for the
part of a task within HEAD_MARGIN blocks of the endpoint's reported head, the worker fetches the
headers of toBlock and of every block that came back without logs, right after the logs:
- a header that is missing means the endpoint does not have the block: the answer is "behind";
- a log whose blockHash is not its block's header hash is from another fork: incorrect;
- a block without logs whose logsBloom says the filter may match is read again through
  eth_getBlockReceipts; logs there that the answer left out make it "behind" too.
Proofs inside one batch are not enough (balancers split batches across backends): the blooms
settle it, since they come with the headers whichever backend answers them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config.settings import LogFilter
from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.rpc import BlockHeader
from pipeline.verify.bloom import may_match

# Blocks below the endpoint's head that an answer must prove it has. Below this the reorg-safe
# end, the hash checks and the audits cover what a trailing backend could leave out.
HEAD_MARGIN = 64

Headers = Callable[[list[int]], dict[int, BlockHeader]]  # headers of these blocks, or RpcError
Receipts = Callable[[int], list[dict]]  # every log of one block, or RpcError


def proof_blocks(start: int, end: int, head: int | None) -> range:
    """The blocks of start..end that must be proven against an endpoint whose head is `head`."""
    if head is None:
        return range(0)
    return range(max(start, head - HEAD_MARGIN + 1), end + 1)


def prove(
    table: pa.Table,
    blocks: range,
    log_filter: LogFilter,
    headers: Headers,
    receipts: Receipts,
) -> None:
    """Raise RpcError (BEYOND_HEAD or INCORRECT) unless the answer's logs of `blocks` are what
    the endpoint's own headers (and, where a bloom asks, its receipts) say."""
    if not blocks:
        return
    hashes = block_hashes(table, blocks)
    wanted = sorted({blocks[-1], *(b for b in blocks if b not in hashes)})
    found = headers(wanted)
    for block in wanted:
        header = found.get(block)
        if header is None:
            raise RpcError(ErrorKind.BEYOND_HEAD, f"the endpoint has no header of block {block}")
        if block in hashes and hashes[block] != header.hash:
            raise RpcError(
                ErrorKind.INCORRECT,
                f"block {block}: the logs' blockHash is not the header's (another fork)",
            )
    empty = [b for b in wanted if b not in hashes]
    doubtful = [b for b in empty if filter_may_match(found[b].bloom, log_filter)]
    for block in doubtful:
        if any(log_filter.matches(log) for log in receipts(block)):
            raise RpcError(
                ErrorKind.BEYOND_HEAD,
                f"block {block}: no logs in the answer, but its receipts hold matching ones "
                "(a backend behind the head answered)",
            )


def block_hashes(table: pa.Table, within: range | None = None) -> dict[int, str]:
    """Block number -> 0x hash, for the blocks an answer has logs of (only `within`)."""
    part = table.select(["block_number", "block_hash"])
    if within is not None:
        numbers = part["block_number"]
        part = part.filter(
            pc.and_(pc.greater_equal(numbers, within.start), pc.less(numbers, within.stop))
        )
    if not part.num_rows:
        return {}
    # A block's logs come together (answers are in log order): one pair per run of rows with
    # the same block and hash, where a group_by cost ~1 ms an answer.
    numbers, hashes = (part[name].combine_chunks() for name in ("block_number", "block_hash"))
    changed = pc.or_(
        pc.not_equal(numbers[1:], numbers[:-1]), pc.not_equal(hashes[1:], hashes[:-1])
    ).to_numpy(zero_copy_only=False)
    starts = pa.array(np.flatnonzero(np.r_[True, changed]))
    return {
        n: h if isinstance(h, str) else "0x" + h.hex()
        for n, h in zip(
            numbers.take(starts).to_pylist(), hashes.take(starts).to_pylist(), strict=True
        )
    }


def filter_may_match(bloom: bytes, log_filter: LogFilter) -> bool:
    """Whether a block with this bloom may hold a log the filter matches."""
    addresses = [bytes.fromhex(a[2:]) for a in log_filter.addresses]
    topics = [[bytes.fromhex(t[2:]) for t in values] for values in log_filter.topics]
    return may_match(bloom, addresses, topics)
