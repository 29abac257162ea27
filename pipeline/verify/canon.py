"""Canonical block headers for the verifier: the blocks of many answers gathered into one batch
request, each asked of an endpoint other than the one whose answer it checks."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.rpc import BlockHeader
from pipeline.verify.sources import HEADER_BATCH, Source, Sources

FLUSH_S = 1.0  # how long a wanted header may wait for others to share its batch request
QUIET_S = 0.2  # ... unless no other check asked for this long: answers have stopped coming
QUIET_END_S = 0.02  # ... shorter once nothing is being fetched: no answer is coming any more
# Rounds in a row without a single header before the checks waiting give up. A round that
# brought some is progress for all of them: their blocks are asked together in block order, and
# a failed request ends the round for the wants not reached yet (an endpoint failing a fifth of
# its requests, asked one header a request, answered ~4 a round: only the first want gained,
# the others gave up after 8 rounds, and their answers were fetched again).
MAX_TRIES = 8
CACHE_HEADERS = 50_000


@dataclass
class _Want:
    """Headers one check waits for, not from `avoid`."""

    blocks: set[int]
    avoid: str
    future: Future = field(default_factory=Future)
    since: float = field(default_factory=time.monotonic)
    found: dict[int, BlockHeader] = field(default_factory=dict)
    tries: int = 0
    error: RpcError | None = None


class Canon:
    """Headers by block number, shared by the verifier's threads; one thread asks for them."""

    def __init__(self, sources: Sources, trusted: Callable[[str], bool], crowd: int = 16) -> None:
        self.sources, self.trusted = sources, trusted
        self.crowd = crowd  # this many checks waiting fill a batch well enough: ask at once
        self._cache: OrderedDict[int, BlockHeader] = OrderedDict()
        self._wants: list[_Want] = []
        self._cond = threading.Condition()
        self._closed = False
        self.quiet_s = QUIET_S  # see fetching()
        self._thread = threading.Thread(target=self._run, name="canon", daemon=True)
        self._thread.start()

    def get(self, blocks: set[int], avoid: str) -> dict[int, BlockHeader]:
        """The headers of `blocks`, asked of an endpoint other than `avoid` where there is one;
        raises the last RpcError when they could not be had."""
        with self._cond:
            found = {b: self._cache[b] for b in blocks if b in self._cache}
            rest = blocks - found.keys()
            if not rest:
                return found
            if self._closed:  # nobody would ask for them any more
                raise RpcError(ErrorKind.CONNECTION, "run ended")
            want = _Want(rest, avoid)
            self._wants.append(want)
            self._cond.notify_all()
        return found | want.future.result()

    def fetching(self, busy: bool) -> None:
        """Whether answers may still come: if not, what is wanted is asked almost at once."""
        with self._cond:
            self.quiet_s = QUIET_S if busy else QUIET_END_S
            self._cond.notify_all()

    def forget(self, block: int) -> None:
        """Drop a cached header (a dispute asks every endpoint afresh)."""
        with self._cond:
            self._cache.pop(block, None)

    def close(self) -> None:
        """Stop the thread; waiting checks get an error."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    due = self._due()
                    if due is not None and due <= 0:
                        break
                    self._cond.wait(due)  # a new want, fetching() or close() wake it early
                if self._closed:
                    for want in self._wants:
                        want.future.set_exception(RpcError(ErrorKind.CONNECTION, "run ended"))
                    return
                wants, self._wants = self._wants, []
            try:
                self._serve(wants)
            except Exception as exc:  # a bug here must fail the checks waiting, not hang them
                for want in wants:
                    if not want.future.done():
                        want.future.set_exception(RpcError(ErrorKind.MALFORMED, repr(exc)))
            with self._cond:
                self._wants = [w for w in wants if not w.future.done()] + self._wants

    def _due(self) -> float | None:
        """Seconds until the wants should be asked for (0 or less: now; None: nothing wanted)."""
        if not self._wants:
            return None
        waiting = sum(len(w.blocks) - len(w.found) for w in self._wants)
        if waiting >= HEADER_BATCH or len(self._wants) >= self.crowd:
            return 0.0
        oldest = min(w.since for w in self._wants)
        newest = max(w.since for w in self._wants)
        return min(oldest + FLUSH_S, newest + self.quiet_s) - time.monotonic()

    def _serve(self, wants: list[_Want]) -> None:
        """One round: each source asked once for what the wants it may serve lack."""
        left = list(wants)
        while left:
            source = self._source(left[0].avoid, max(left[0].blocks))
            served = [w for w in left if self._serves(source, w)] or [left[0]]
            left = [w for w in left if w not in served]
            self._ask(source, served)

    def _serves(self, source: Source, want: _Want) -> bool:
        alone = len(self.sources.all) == 1
        return (want.avoid != source.name or alone) and source.knows(max(want.blocks))

    def _source(self, avoid: str, upto: int) -> Source:
        """Another endpoint than `avoid` that may have block `upto`; `avoid` itself (which
        answered for those blocks) when there is none, or when the other one is failing or
        rests longer than a flush and `avoid` is in better health: a throttled or dead
        neighbour must not stall the checks."""
        own = self.sources.all[avoid]
        source = self.sources.pick({avoid}, self.trusted, upto=upto) or own
        unwell = source.failures > 0 or source.resting() > FLUSH_S
        if unwell and own.health() < source.health() and self.trusted(avoid):
            source = own
        self.sources.wait(source)
        return source

    def _ask(self, source: Source, wants: list[_Want]) -> None:
        blocks = sorted({b for w in wants for b in w.blocks if b not in w.found})
        got: dict[int, BlockHeader] = {}
        error: RpcError | None = None
        while blocks:
            if not source.affords(len(blocks)):  # the checks waiting re-plan with its room
                error = RpcError(ErrorKind.RATE_LIMITED, f"{source.name}: its share is booked")
                for want in wants:
                    want.tries = MAX_TRIES
                break
            chunk, size = blocks[: source.batches.size], source.batches.size
            try:
                found, refusal = source.ask(len(chunk), lambda c, b=chunk: c.block_headers(b))
            except RpcError as err:
                if len(chunk) > 1 and err.about_batch:
                    source.batches.refused(len(chunk))  # smaller at once, same endpoint
                    continue
                if err.kind is ErrorKind.BEYOND_HEAD:
                    source.lacks(chunk[0])
                error = err
                break
            blocks = blocks[size:]
            got |= found
            if found:
                source.has(max(found))
            if refusal is None:
                source.batches.answered(len(chunk))
                continue
            if refusal.about_batch and len(chunk) > 1:  # calls refused for the batch's size
                source.batches.refused(len(chunk))
                blocks = [b for b in chunk if b not in found] + blocks
                continue
            error = refusal
            if refusal.kind is ErrorKind.BEYOND_HEAD:
                source.lacks(min(set(chunk) - found.keys()))  # another one asks next
            elif refusal.kind is ErrorKind.RATE_LIMITED:
                source.throttled(refusal, len(chunk))
            elif found:
                source.batches.partial(len(found))
            elif len(chunk) > 1:  # a batch answered with nothing usable: smaller, then singly
                source.batches.refused(len(chunk))
                blocks = chunk + blocks
            else:
                source.rest()  # it refuses: another one asks next
        self._remember(got)
        for want in wants:
            want.found |= {b: got[b] for b in want.blocks if b in got}
            if want.tries < MAX_TRIES:  # already at it: its share is booked, it gives up now
                want.tries = 0 if got else want.tries + 1
            want.error = error or want.error
            if len(want.found) == len(want.blocks):
                want.future.set_result(want.found)
            elif want.tries >= MAX_TRIES:
                want.future.set_exception(
                    want.error or RpcError(ErrorKind.MALFORMED, "headers not answered")
                )

    def _remember(self, headers: dict[int, BlockHeader]) -> None:
        with self._cond:
            self._cache.update(headers)
            while len(self._cache) > CACHE_HEADERS:
                self._cache.popitem(last=False)
