"""block_timestamp for the logs of one answer: from the logs' own blockTimestamp while the
endpoint is trusted (checked against headers now and then), else from the headers of the blocks
that have logs, fetched in batches sized to what the endpoint accepts."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from itertools import pairwise
from typing import NamedTuple, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.convert import TIMESTAMP_TYPE
from pipeline.fetch.rpc import BlockHeader, RpcClient
from pipeline.messages import Reaction, Task

BATCH_START = 50  # header calls in one batch request until the endpoint says otherwise
BATCH_GROW_AFTER = 10  # whole batches in a row before trying twice as many (up to the ceiling)
CACHE_HEADERS = 4096  # headers a worker keeps (a retried or split task asks again)
# One answer in CHECK_EVERY has the header of one of its blocks fetched and compared with its
# blockTimestamp; so is every answer until the endpoint's first check has passed.
CHECK_EVERY = 50
# Whole-request failures that say nothing about the batch's size: the worker reacts to them.
_ENDPOINT_FAULTS = frozenset(
    {ErrorKind.RATE_LIMITED, ErrorKind.QUOTA, ErrorKind.UNAUTHORIZED, ErrorKind.TIMEOUT,
     ErrorKind.CONNECTION}
)  # fmt: skip
_ENDPOINT_REFUSALS = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.QUOTA, ErrorKind.UNAUTHORIZED})


class Recorder(Protocol):
    """How BlockTimestamps counts the requests it makes (EndpointWorker._record)."""

    def __call__(
        self,
        ok: bool,
        client: RpcClient,
        task: Task | None,
        err: RpcError | None = None,
        reaction: Reaction | None = None,
    ) -> None: ...


class HeaderBatches:
    """How many header calls one request to an endpoint may carry, as learned from it: halved
    when a batch is refused (never again as many), cut to what a partial answer answered, and
    doubled back after `grow_after` whole batches, up to the largest size not refused. A
    size of 1 sends plain requests (some endpoints take no batch at all)."""

    def __init__(
        self, start: int = BATCH_START, most: int | None = None, grow_after: int = BATCH_GROW_AFTER
    ) -> None:
        self.size, self.ceiling = start, max(start, most or start)  # `most`: what it may grow to
        self.grow_after = grow_after
        self._streak = 0
        self._lock = threading.Lock()

    def refused(self, sent: int, certain: bool = True) -> None:
        """A batch of `sent` calls was refused; `certain`: for its size (a server error might
        be a fault that a smaller batch would meet too: it halves, but sets no ceiling)."""
        with self._lock:
            if certain:
                self.ceiling = max(1, min(self.ceiling, sent - 1))
            self.size = max(1, min(self.size, sent // 2, self.ceiling))
            self._streak = 0

    def partial(self, answered: int) -> None:
        """Only `answered` calls of a batch were answered: that many is what it takes."""
        with self._lock:
            self.ceiling = max(1, min(self.ceiling, answered))
            self.size = min(self.size, self.ceiling)
            self._streak = 0

    def answered(self, sent: int) -> None:
        """A batch of `sent` calls was answered whole."""
        with self._lock:
            if sent < self.size:
                return  # a short remainder says nothing about the size
            self._streak += 1
            if self._streak >= self.grow_after and self.size < self.ceiling:
                self.size, self._streak = min(self.ceiling, 2 * self.size), 0


class Stamped(NamedTuple):
    """An answer with its block_timestamp filled, and the headers at hand for its blocks (read
    from the same endpoint, each of the hash its logs gave)."""

    table: pa.Table
    headers: dict[int, BlockHeader]


class _Block(NamedTuple):
    """One block of an answer: its number and hash (0x), and the blockTimestamp its logs gave:
    the least and greatest value, how many logs gave one, out of how many."""

    number: int
    hash: str
    low: int | None
    high: int | None
    given: int
    logs: int


class BlockTimestamps:
    """The block_timestamp of an endpoint's answers, shared by its worker's threads.

    A log's blockTimestamp is used when the endpoint is trusted and every log of the block gave
    the same non-zero one; any other block (no field, zero, or the endpoint distrusted) takes
    its header's. Free checks run on every answer (one value per block, never decreasing with
    the block number, equal to any header already at hand); one header is fetched and compared
    in every answer until the first such check passes, then in one answer in CHECK_EVERY. A
    failed check distrusts the endpoint's field for the rest of the run: that answer, and every
    later one, takes all its timestamps from headers (the headers' hashes must be the logs'
    blockHash, so they are of the same blocks)."""

    def __init__(
        self,
        name: str,
        pace: Callable[[int], object],  # waits for --rps before a request of n calls
        record: Recorder,
        notice: Callable[[str], None],
        batches: HeaderBatches | None = None,
    ) -> None:
        self.name = name
        self.pace, self.record, self.notice = pace, record, notice
        self.batches = batches or HeaderBatches()
        self.trusted = True
        self.checked = False  # a check of this endpoint's blockTimestamp has passed
        self.answers = 0  # answers with a blockTimestamp since then
        self._cache: OrderedDict[int, BlockHeader] = OrderedDict()
        self._lock = threading.Lock()

    def fill(self, client: RpcClient, task: Task, table: pa.Table) -> Stamped:
        """`table` with no null block_timestamp; raises the RpcError of a header request that
        failed (the worker reacts to it as to any failed request of the task)."""
        if not table.num_rows:
            return Stamped(table, {})
        blocks = _blocks(table)
        stamped = [b for b in blocks if b.given]
        trusted = self.trusted
        if trusted and stamped and (problem := _inconsistency(stamped)):
            trusted = self._distrust(problem)
        check = stamped[-1].number if trusted and stamped and self._check_due() else None
        wanted = {b.number for b in blocks if not trusted or b.given < b.logs}
        if check is not None:
            wanted.add(check)
        headers = self._known(blocks) | self._fetch(client, task, blocks, wanted)
        if trusted and (problem := _disagreement(stamped, headers)):
            trusted = self._distrust(problem)
        elif check is not None:
            with self._lock:
                self.checked = True
        if not (trusted and self.trusted):  # distrusted now, or by another thread meanwhile
            rest = {b.number for b in blocks} - headers.keys()
            headers |= self._fetch(client, task, blocks, rest)
        seconds = [headers[b.number].timestamp if b.number in headers else b.low for b in blocks]
        numbers = pa.array([b.number for b in blocks], pa.uint64())
        column = pc.take(pa.array(seconds, pa.int64()), pc.index_in(table["block_number"], numbers))
        at = table.schema.get_field_index("block_timestamp")
        return Stamped(
            table.set_column(at, "block_timestamp", column.cast(TIMESTAMP_TYPE)), headers
        )

    def headers(self, client: RpcClient, task: Task, blocks: list[int]) -> dict[int, BlockHeader]:
        """Fresh headers of `blocks` (no cache: near the head they may change), in batches as
        large as the endpoint takes; a block it does not have raises BEYOND_HEAD."""
        found: dict[int, BlockHeader] = {}
        missing = list(blocks)
        while missing:
            found |= self._request(client, task, missing[: self.batches.size])
            missing = [n for n in missing if n not in found]
        return found

    def _check_due(self) -> bool:
        with self._lock:
            if not self.checked:
                return True
            self.answers += 1
            return self.answers % CHECK_EVERY == 0

    def _distrust(self, problem: str) -> bool:
        """Stop trusting the endpoint's blockTimestamp; False (what `trusted` becomes)."""
        with self._lock:
            was, self.trusted = self.trusted, False
        if was:
            self.notice(
                f"{self.name}: blockTimestamp disagrees with the blocks ({problem}); its "
                "timestamps come from block headers for the rest of the run"
            )
        return False

    def _known(self, blocks: list[_Block]) -> dict[int, BlockHeader]:
        """Cached headers of these blocks (of the same hash: not from before a reorg)."""
        with self._lock:
            found = {b.number: self._cache.get(b.number) for b in blocks}
            for number, header in found.items():
                if header is not None:
                    self._cache.move_to_end(number)
        return {
            b.number: found[b.number]
            for b in blocks
            if found[b.number] is not None and found[b.number].hash == b.hash
        }

    def _remember(self, headers: dict[int, BlockHeader]) -> None:
        with self._lock:
            self._cache.update(headers)
            for number in headers:
                self._cache.move_to_end(number)
            while len(self._cache) > CACHE_HEADERS:
                self._cache.popitem(last=False)

    def _fetch(
        self, client: RpcClient, task: Task, blocks: list[_Block], wanted: set[int]
    ) -> dict[int, BlockHeader]:
        """The headers of the `wanted` blocks not already known, in batches as large as the
        endpoint takes; each must have the hash the logs gave their block."""
        known = self._known([b for b in blocks if b.number in wanted])
        headers = dict(known)
        missing = sorted(wanted - known.keys())
        while missing:
            found = self._request(client, task, missing[: self.batches.size])
            headers |= found
            missing = [n for n in missing if n not in found]
        hashes = {b.number: b.hash for b in blocks}
        for number, header in headers.items():
            if header.hash != hashes[number]:
                with self._lock:
                    self._cache.pop(number, None)
                raise RpcError(
                    ErrorKind.MALFORMED,
                    f"block {number}: the header's hash is not the logs' blockHash (a reorg?)",
                )
        return headers

    def _request(self, client: RpcClient, task: Task, chunk: list[int]) -> dict[int, BlockHeader]:
        """One header request (a batch, or a plain call for one block); what it brought, which
        is nothing when the endpoint refused the batch (then the next one is smaller)."""
        self.pace(len(chunk))
        try:
            found, refusal = client.block_headers(chunk)
        except RpcError as err:
            about_batch = err.about_batch
            if len(chunk) == 1 or (err.kind in _ENDPOINT_FAULTS and not about_batch):
                raise  # the worker records it and reacts
            self.record(False, client, task, err, Reaction.SPLIT)
            self.batches.refused(
                len(chunk), certain=about_batch or err.kind is not ErrorKind.SERVER
            )
            return {}
        self._remember(found)
        if refusal is None:
            self.record(True, client, task)
            self.batches.answered(len(chunk))
            return found
        about_batch = refusal.about_batch
        if refusal.kind is ErrorKind.BEYOND_HEAD or (
            refusal.kind in _ENDPOINT_REFUSALS and not about_batch
        ):
            raise refusal  # a block the endpoint does not have, or a throttle: the worker's call
        if found:
            self.record(True, client, task)
            self.batches.partial(len(found))
        else:
            self.record(False, client, task, refusal, Reaction.SPLIT)
            self.batches.refused(len(chunk))
        return found


def _blocks(table: pa.Table) -> list[_Block]:
    """The answer's blocks in order, with what their logs say of them."""
    seconds = table["block_timestamp"].cast(pa.int64())
    grouped = (
        pa.table({"number": table["block_number"], "hash": table["block_hash"], "seconds": seconds})
        .group_by(["number", "hash"])
        .aggregate(
            [("seconds", "min"), ("seconds", "max"), ("seconds", "count"), ("number", "count")]
        )
        .sort_by("number")
    )
    numbers = grouped["number"].to_pylist()
    if len(set(numbers)) != len(numbers):
        raise RpcError(ErrorKind.MALFORMED, "the logs of one block name two block hashes")
    return [
        _Block(n, _hex(h), lo, hi, given, logs)
        for n, h, lo, hi, given, logs in zip(
            numbers,
            grouped["hash"].to_pylist(),
            grouped["seconds_min"].to_pylist(),
            grouped["seconds_max"].to_pylist(),
            grouped["seconds_count"].to_pylist(),
            grouped["number_count"].to_pylist(),
            strict=True,
        )
    ]


def _hex(value: bytes | str) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else value.lower()


def _inconsistency(stamped: list[_Block]) -> str:
    """What is wrong with the blockTimestamps of an answer on their own: two in one block, or a
    block before the one it follows ("" when nothing)."""
    for block in stamped:
        if block.low != block.high:
            return f"block {block.number}'s logs give {block.low} and {block.high}"
    for before, after in pairwise(stamped):
        if after.low < before.high:
            return f"block {after.number} at {after.low}, before block {before.number}"
    return ""


def _disagreement(stamped: list[_Block], headers: dict[int, BlockHeader]) -> str:
    """The first block whose logs' blockTimestamp is not its header's ("" when none)."""
    for block in stamped:
        header = headers.get(block.number)
        if header is not None and not block.low == block.high == header.timestamp:
            return (
                f"block {block.number}: {block.high} in its logs, {header.timestamp} in its header"
            )
    return ""
