"""The endpoints the verifier asks for headers, audits and receipts: one client per thread and
endpoint, paced within a share of the endpoint's --rps, resting after a failure (0.5 s, 1 s,
2 s ... 8 s) so that a failing endpoint is asked again only later, and sending batches as
large as the endpoint takes."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TypeVar

from pipeline.config.endpoints import Endpoint
from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.ratecontrol import Throttle
from pipeline.fetch.rpc import RpcClient
from pipeline.fetch.timestamps import HeaderBatches

# What share of an endpoint's --rps the verifier may use, in calls (providers meter each call
# of a batch); its worker books them too (TaskBoard.lend), so that together they keep to
# --rps. Checks are sampled to fit (Source.room).
VERIFY_SHARE = 0.1
MAX_BACKLOG_S = 2.0  # calls booked this far ahead of now fill an --rps endpoint's share
# Calls a second the checks keep to on an endpoint that throttled (them or its worker) while its
# worker may send, rising again with success: a burst of header calls must not cost the worker
# its requests.
THROTTLED_RATE = 1.0
REST_S = (0.5, 1.0, 2.0, 4.0, 8.0)
_BEST = (False, False, 0, 0.0)  # a pick key: trusted, awake, no failure, no rest left
WAKE_S = 0.25  # a request waiting for its slots looks this often whether they came sooner
CHUNK_TRIES = 3  # a batch of a check that fails (not for its size) is sent again, after a rest
# Failures that say the endpoint is unwell (not that a request was too big or a block unknown).
ENDPOINT_FAULTS = frozenset(
    {ErrorKind.RATE_LIMITED, ErrorKind.QUOTA, ErrorKind.UNAUTHORIZED, ErrorKind.TIMEOUT,
     ErrorKind.CONNECTION, ErrorKind.SERVER, ErrorKind.MALFORMED}
)  # fmt: skip
# Header calls in one batch: the worker's polite start, doubling after every 2 whole batches
# up to HEADER_BATCH (providers that meter each call see a burst of them at once).
HEADER_BATCH = 200
GROW_AFTER = 2

_Result = TypeVar("_Result")
# Told of every request the checks made: the endpoint, its calls, how it failed (None: answered).
OnRequest = Callable[[str, int, ErrorKind | None], None]
_Chunk = TypeVar("_Chunk")


class Source:
    """One endpoint as the verifier uses it."""

    def __init__(
        self, endpoint: Endpoint, timeout: float, on_request: OnRequest, patient: bool = False
    ):
        self.endpoint = endpoint
        self.patient = patient  # --all-hashes: checks queue for their share, never sample
        self.name = endpoint.name
        self.timeout = timeout
        self.throttle = Throttle(endpoint.rps * VERIFY_SHARE if endpoint.rps else None)
        self.batches = HeaderBatches(most=HEADER_BATCH, grow_after=GROW_AFTER)
        self.on_request = on_request
        self.failures = 0
        self.resting_until = 0.0
        self.has_receipts = True  # until it says eth_getBlockReceipts is not there
        self.head: int | None = None  # the newest block it is known to have (None: unknown)
        self._yielding = True  # its worker may send: the checks give way to it
        self._booked: deque[float] = deque()  # call slots room() booked, for ask() to spend
        # How often share() brought the booked slots sooner, and by what factor the last time.
        self._speedup = (0, 1.0)
        self._local = threading.local()
        self._lock = threading.Lock()

    def share(self, fraction: float) -> None:
        """Pace within `fraction` of the endpoint's --rps from now on (a rate lowered by its
        throttling stays low, and rises with success up to that); slots booked at a lower
        pace come sooner."""
        if self.endpoint.rps:
            self._sooner(self.throttle.cap(self.endpoint.rps * fraction))

    def give_way(self, worker_busy: bool) -> None:
        """Whether its worker may still send. While it may, a throttle sends the checks down to
        THROTTLED_RATE; once it is done, the rate a throttle lowered goes back up to the ceiling
        (--rps or none), and a throttle halves the rate the checks reach, as a worker's."""
        with self._lock:
            done, self._yielding = self._yielding and not worker_busy, worker_busy
        if done:  # once, as the worker stops: a throttle of the checks' own then stays
            self._sooner(self.throttle.restore())

    def _sooner(self, factor: float) -> None:
        """The rate rose by 1/factor: what room() booked at the old pace comes sooner too."""
        if factor < 1:
            now = time.monotonic()
            with self._lock:
                self._booked = deque(min(t, now + (t - now) * factor) for t in self._booked)
                self._speedup = (self._speedup[0] + 1, factor)

    def health(self) -> tuple[bool, int]:
        """Lower is better: resting or not, then failures in a row (not for a batch's size)."""
        return self.resting() > 0, self.failures

    def resting(self) -> float:
        """Seconds until this endpoint may be asked again (0: now)."""
        with self._lock:
            return max(0.0, self.resting_until - time.monotonic())

    def knows(self, block: int | None) -> bool:
        """Whether it may have `block` (not known to be behind it)."""
        with self._lock:
            return block is None or self.head is None or block <= self.head

    def lacks(self, block: int) -> None:
        """It answered that it does not have `block` yet: its head is before it."""
        with self._lock:
            self.head = block - 1 if self.head is None else min(self.head, block - 1)

    def has(self, block: int) -> None:
        """It answered for `block`: its head is at least there."""
        with self._lock:
            if self.head is not None and block > self.head:
                self.head = block

    def metered(self) -> bool:
        """Whether the checks' calls to it are paced (its --rps, or the rate a throttle left)
        and sampled to fit, rather than all made (no rate, or --all-hashes)."""
        return bool(self.throttle.rate) and not self.patient

    def room(self, calls: int) -> int:
        """How many of `calls` calls a check may make: all of them without --rps (or when
        patient); with it, as many as keep the verifier's share booked at most MAX_BACKLOG_S
        ahead. Those are booked at once (checks running side by side see each other's), for
        ask() to spend."""
        rate = self.throttle.rate
        if not rate:
            return calls
        with self._lock:
            room = calls if self.patient else int((MAX_BACKLOG_S - self.throttle.backlog()) * rate)
            grant = max(0, min(calls, room))
            now = time.monotonic()
            self._booked.extend(now + self.throttle.reserve() for _ in range(grant))
        return grant

    def _slots(self, calls: int) -> float:
        """Seconds until `calls` calls may be sent: slots room() booked first (unless long
        gone: a burst of them would exceed the rate), new ones for the rest."""
        now = time.monotonic()
        with self._lock:
            while self._booked and self._booked[0] < now - 1.0:
                self._booked.popleft()
            taken = [self._booked.popleft() for _ in range(min(calls, len(self._booked)))]
        taken += [now + self.throttle.reserve() for _ in range(calls - len(taken))]
        return max([now, *taken]) - now

    def _wait(self, seconds: float) -> None:
        """Sleep until the slots a request took, and sooner if share() widens meanwhile (a
        patient check may have taken slots far ahead at the share kept while fetching)."""
        left = seconds
        while left > 0:
            seen, step = self._speedup[0], min(left, WAKE_S)
            time.sleep(step)
            left -= step
            count, factor = self._speedup
            if count != seen:
                left *= factor

    def affords(self, calls: int) -> bool:
        """Whether `calls` more calls fit its share of --rps (or the rate it allows) within
        MAX_BACKLOG_S, counting the slots room() booked for them; checks that do not fit
        sample instead of queueing."""
        rate = self.throttle.rate
        if not rate or self.patient:
            return True
        with self._lock:
            unbooked = max(0, calls - len(self._booked))
        return unbooked / rate + self.throttle.backlog() <= MAX_BACKLOG_S

    def pause(self, seconds: float) -> None:
        """Leave it alone for `seconds` (at most the longest rest: a check must not sit out a
        long cool-down while the run waits for it): it throttles, or its worker cools down."""
        with self._lock:
            until = time.monotonic() + min(seconds, REST_S[-1])
            self.resting_until = max(self.resting_until, until)

    def ask(self, calls: int, request: Callable[[RpcClient], _Result]) -> _Result:
        """Run one request of `calls` calls within the pacing; a failure makes the endpoint
        rest (unless it is about the batch's size) and is raised."""
        self._wait(self._slots(calls))
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = RpcClient(self.endpoint, self.timeout)
        try:
            result = request(client)
        except RpcError as err:
            self.on_request(self.name, calls, err.kind)
            if err.kind is ErrorKind.RATE_LIMITED and not err.about_batch:
                self.throttled(err, calls)
            elif err.kind in ENDPOINT_FAULTS and not err.about_batch:
                self.rest()
            raise
        self.on_request(self.name, calls, None)
        self.throttle.on_success()
        with self._lock:
            self.failures = 0
        return result

    def throttled(self, err: RpcError, calls: int) -> None:
        """It said "too many requests" to `calls` calls: from now on paced at THROTTLED_RATE
        while its worker may send, else at half the rate reached and no less (rising again
        with success; the checks sample to fit), in smaller batches (providers meter each
        call), after a rest or the pause it asked for. The floor matters where 429s come
        whatever the pace: halving at each would starve the checks (a lone endpoint failing a
        tenth of its requests with 429s took 431 s for 1,000 blocks)."""
        with self._lock:
            yielding = self._yielding
        if yielding:
            self.throttle.limit(THROTTLED_RATE)
        else:
            self.throttle.on_throttled(err.retry_after, floor=THROTTLED_RATE)
        if calls > 1:
            self.batches.refused(calls, certain=False)
        self.rest()
        self.pause(err.retry_after or 0.0)

    def in_batches(
        self,
        items: list[int],
        request: Callable[[RpcClient, list[int]], _Chunk],
        most: int | None = None,
    ) -> list[_Chunk]:
        """`request` over `items` in batches as large as the endpoint takes (and at most `most`
        items): a batch it refuses for its size is sent again at once, smaller."""
        answers: list[_Chunk] = []
        failures = 0
        while items:
            chunk = items[: min(self.batches.size, most or self.batches.size)]
            try:
                answer = self.ask(len(chunk), lambda client, chunk=chunk: request(client, chunk))
            except RpcError as err:
                if len(chunk) > 1 and err.about_batch:
                    self.batches.refused(len(chunk))
                    continue
                failures += 1
                if failures >= CHUNK_TRIES or err.kind not in ENDPOINT_FAULTS:
                    raise
                time.sleep(self.resting())
                continue
            answers.append(answer)
            self.batches.answered(len(chunk))
            items = items[len(chunk) :]
        return answers

    def rest(self) -> None:
        """Leave this endpoint alone for a while (longer after each failure in a row)."""
        with self._lock:
            pause = REST_S[min(self.failures, len(REST_S) - 1)]
            self.failures += 1
            self.resting_until = time.monotonic() + pause


class Sources:
    """Every endpoint of the run, for the verifier to pick from."""

    def __init__(
        self,
        endpoints: Iterable[Endpoint],
        timeout: float,
        on_request: OnRequest,
        patient: bool = False,
    ) -> None:
        self.all = {e.name: Source(e, timeout, on_request, patient) for e in endpoints}
        self.out: set[str] = set()

    def pick(
        self,
        avoid: Iterable[str],
        trusted: Callable[[str], bool],
        receipts: bool = False,
        upto: int | None = None,
    ) -> Source | None:
        """The best endpoint not in `avoid` that may have block `upto` (and has
        eth_getBlockReceipts, if `receipts`): trusted before suspect, awake before resting,
        then by failures in a row, then the one that rests least; None when there is no
        other."""
        avoid = set(avoid)
        best, best_key = None, None
        for s in self.all.values():
            unusable = s.name in avoid or s.name in self.out or (receipts and not s.has_receipts)
            if unusable or not s.knows(upto):
                continue
            key = (not trusted(s.name), *s.health(), s.resting())
            if key == _BEST:  # nothing beats it: the others need not be looked at
                return s
            if best_key is None or key < best_key:
                best, best_key = s, key
        return best

    def wait(self, source: Source) -> None:
        """Sleep out the source's rest."""
        time.sleep(source.resting())
