"""The verifier: runs in the supervisor process and checks every batch the writer holds before
it is staged. Its block hashes against headers from another endpoint, its logs against their
blocks' blooms, and (by the endpoint's standing in trust.Ledger) its rows against another
endpoint's answer or the block receipts (auditor.Auditor; a third source settles a
disagreement). A wrong answer is dropped and fetched again, and its endpoint becomes suspect
(everything it staged is fetched again from the others), then out."""

from __future__ import annotations

import contextlib
import queue
import random
import threading
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from pipeline.config.settings import BackfillConfig
from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.spec import WorkerSpec
from pipeline.messages import (
    Check,
    Checked,
    Distrust,
    EndpointState,
    EndpointStatus,
    EventQueue,
    FetchedBatch,
    Notice,
    ResultQueue,
    Task,
    Verdict,
)
from pipeline.plan.board import QUEUE_GONE, TaskBoard
from pipeline.store.files import read_fragment
from pipeline.verify.audit import index_gaps
from pipeline.verify.auditor import Auditor
from pipeline.verify.bloomcheck import bloom_excluded
from pipeline.verify.canon import Canon
from pipeline.verify.headproof import block_hashes, filter_may_match
from pipeline.verify.sources import THROTTLED_RATE, VERIFY_SHARE, Source, Sources
from pipeline.verify.trust import Ledger, Standing

# Most of a check is waiting for headers that many answers share in one batch: enough threads
# that a batch fills up; the refetches of audits are fewer at once (AUDITS_AT_ONCE).
THREADS = 64
AUDITS_AT_ONCE = 4
# Blocks at an answer's end whose headers are read even without logs: a truncated answer
# leaves its last blocks empty. Few, since full blooms (mainnet's) often "may match".
TAIL_BLOCKS = 2
# With every log asked for, blocks of an answer without logs whose headers are read as well: up
# to one for each BLANK_SHARE blocks with logs (a dense chain has few empty blocks: all of them).
BLANK_SHARE = 10
CHECK_TRIES = 3  # a check whose requests fail this often costs its task an attempt
VERDICT_WAIT_S = 60.0  # the writer takes verdicts at once; it is gone when this runs out
DISPUTE_VOTES = 2  # other endpoints asked for a header whose hash is in dispute


class Verifier:
    """Checks held batches on a few threads; each check ends with a Verdict to the writer."""

    def __init__(
        self,
        config: BackfillConfig,
        spec: WorkerSpec,
        board: TaskBoard,
        results: ResultQueue,
        events: EventQueue,
        heads: Mapping[str, int] | None = None,
    ) -> None:
        self.spec, self.board, self.results, self.events = spec, board, results, events
        names = [e.name for e in config.endpoints]
        self.ledger = Ledger(names, config.audit_rate)
        self.sources = Sources(
            config.endpoints, config.timeout, self._count_request, patient=config.all_hashes
        )
        for name, head in (heads or {}).items():
            if name in self.sources.all:
                self.sources.all[name].head = head
        self.canon = Canon(self.sources, self.ledger.trusted, crowd=THREADS - AUDITS_AT_ONCE)
        self._rng = random.Random(1)
        self.auditor = Auditor(spec, self.sources, self.ledger, events, self._strike, self._rng)
        self._busy = 0
        self._lock = threading.Lock()
        self._audits = threading.Semaphore(AUDITS_AT_ONCE)
        # Daemon threads: one stuck in a request must not hold the process at its exit.
        self._todo: queue.SimpleQueue[FetchedBatch | None] = queue.SimpleQueue()
        # Work on every log of an answer, on one thread: Arrow's allocator keeps a heap per
        # thread, and 64 of them held ~200 MB more (1M logs, measured).
        self._crunch = ThreadPoolExecutor(1, thread_name_prefix="verify-logs")
        self._closed = False
        for i in range(THREADS):
            threading.Thread(target=self._serve, name=f"verify-{i}", daemon=True).start()

    def submit(self, batch: FetchedBatch) -> None:
        """Check a held batch in the background."""
        with self._lock:
            self._busy += 1
        self._todo.put(batch)

    def busy(self) -> int:
        """Batches being checked."""
        with self._lock:
            return self._busy

    def endpoint_changed(self, event: EndpointState) -> None:
        """What its worker learned of an endpoint: out for the run, throttling (the checks
        then keep to a learned rate, sampling to fit, and pause as it asked), or cooling down
        after a run of faults."""
        source = self.sources.all.get(event.endpoint)
        if source is None:
            return
        if event.retired:
            self.sources.out.add(event.endpoint)
            return
        if event.state is EndpointStatus.THROTTLED:
            source.throttle.limit(THROTTLED_RATE)  # the checks yield to the worker
        if event.state in (EndpointStatus.THROTTLED, EndpointStatus.CIRCUIT_OPEN):
            source.pause(event.pause_s)  # not a backoff after one fault: checks rest on their own

    def fetching(self, busy: bool) -> None:
        """Whether any task is waiting or being fetched: if not, the checks left may use each
        endpoint's whole --rps (its worker has nothing to send) at the rate it allows, and ask
        for headers at once."""
        for source in self.sources.all.values():
            source.share(VERIFY_SHARE if busy else 1.0)
            source.give_way(busy)
        self.canon.fetching(busy)

    def close(self) -> None:
        """Stop: checks under way end without a verdict (the writer is gone by then)."""
        self._closed = True
        self.canon.close()
        self._crunch.shutdown(wait=False)
        for _ in range(THREADS):
            self._todo.put(None)

    def _serve(self) -> None:
        while (batch := self._todo.get()) is not None:
            self._run(batch)

    def _count_request(self, name: str, calls: int, error: ErrorKind | None) -> None:
        self.events.put(Checked(name, Check.REQUEST, error=error))
        if self.sources.all[name].endpoint.rps:
            self.board.lend(name, calls)

    def _run(self, batch: FetchedBatch) -> None:
        try:
            verdict = self._check_patiently(batch)
        except (RpcError, OSError, pa.ArrowException) as exc:
            # Not the answer's fault: it is fetched again, which costs it one attempt.
            verdict = Verdict(batch.task.task_id, False, f"could not be verified: {exc}")
        except Exception as exc:  # a bug here must not hold the task forever
            verdict = Verdict(batch.task.task_id, False, f"could not be verified: {exc!r}")
            if not self._closed:  # after close(), what fails is the run's end, not a check
                self.events.put(Notice(f"verifying task {batch.task.task_id} failed: {exc!r}"))
        finally:
            with self._lock:
                self._busy -= 1
        with contextlib.suppress(queue.Full, *QUEUE_GONE):
            self.results.put(verdict, timeout=VERDICT_WAIT_S)

    def _check_patiently(self, batch: FetchedBatch) -> Verdict:
        """The checks, tried again (the failing source rests; another one is asked) when a
        request they make fails; the last failure is raised."""
        for _ in range(CHECK_TRIES - 1):
            try:
                return self._check(batch)
            except RpcError:
                continue
        return self._check(batch)

    def _check(self, batch: FetchedBatch) -> Verdict:
        """One try of the checks. What they found is counted once the try ends in a verdict: a
        try cut short by a failed request is made again whole, and would count twice."""
        found: list[Checked] = []
        verdict = self._judge(batch, found)
        for checked in found:
            self.events.put(checked)
        return verdict

    def _judge(self, batch: FetchedBatch, found: list[Checked]) -> Verdict:
        task, name, spec = batch.task, batch.endpoint, self.spec
        table = read_fragment(Path(batch.path))
        hashes = block_hashes(table)
        source = self._header_source(name, task.end)
        # Headers its worker read for timestamps are those this source would give: not again.
        shared = batch.headed and source.name == name
        if source.metered() and self.auditor.possible(name, task.end):
            # Each call counts against --rps (or a throttle): a header costs one call a block,
            # where an audit checks a whole answer in one. The share goes to the audits.
            tail, blank, then = [], [], []
        else:
            last = max(hashes, default=task.start - 1)
            tail = list(range(max(last + 1, task.end - TAIL_BLOCKS + 1), task.end + 1))
            # Every log asked for: a block of the answer without logs whose bloom is not empty
            # had some. A share of them is looked at (all of them where few blocks are empty).
            blank = self._blank_sample(task, hashes, tail) if spec.log_filter.takes_all else []
            then = ([] if shared else sorted(hashes)) + blank
        headers = self.canon.get(self._affordable(source, tail, then), avoid=name)
        wrong = [b for b, h in hashes.items() if b in headers and headers[b].hash != h]
        confirmed = len(hashes) if shared else sum(b in headers for b in hashes)
        unconfirmed = len(hashes) - confirmed
        found.append(
            Checked(name, Check.HASH, bool(wrong), confirmed=confirmed, unconfirmed=unconfirmed)
        )
        if wrong:
            return self._dispute(batch, wrong[0], hashes[wrong[0]])
        excluded = self._crunch.submit(bloom_excluded, table, headers, self._rng).result()
        found.append(Checked(name, Check.BLOOM, excluded is not None))
        if excluded is not None:
            detail = f"block {excluded}: a log its bloom excludes"
            return self.auditor.wrong(batch, detail)
        doubtful = [
            b
            for b in tail + blank
            if b in headers and filter_may_match(headers[b].bloom, spec.log_filter)
        ]
        # Every log asked for, yet a block's log indexes skip one: its receipts settle it.
        gapped = index_gaps(table) if spec.log_filter.takes_all else []
        source = self.auditor.receipts_source(name, task.end)
        for blocks, check in ((doubtful, Check.BLOOM), (gapped, Check.AUDIT)):
            if source is not None and blocks:
                blocks = blocks[: source.room(len(blocks))]
                verdict = self.auditor.against_receipts(batch, table, blocks, source, check, found)
                if not verdict.ok:
                    return verdict
        if self.ledger.audit_due(name):
            with self._audits:
                return self.auditor.audit(batch, table, found)
        return Verdict(task.task_id, True)

    def _blank_sample(self, task: Task, hashes: Mapping[int, str], tail: list[int]) -> list[int]:
        """Blocks of the task without logs (and not in `tail`), at most a tenth as many as the
        blocks with logs (TAIL_BLOCKS at least), at random."""
        blank = [b for b in range(task.start, task.end + 1) if b not in hashes and b not in tail]
        room = max(TAIL_BLOCKS, len(hashes) // BLANK_SHARE)
        return sorted(self._rng.sample(blank, room)) if len(blank) > room else blank

    def _dispute(self, batch: FetchedBatch, block: int, claimed: str) -> Verdict:
        """A block hash the header does not confirm: the other endpoints vote on the header."""
        self.canon.forget(block)
        votes: Counter[str] = Counter()
        others = [s for s in self.sources.all.values() if s.name != batch.endpoint]
        for source in others[:DISPUTE_VOTES] or [self.sources.all[batch.endpoint]]:
            try:
                found, _ = source.ask(1, lambda c: c.block_headers([block]))
            except RpcError:
                continue
            if block in found:
                votes[found[block].hash] += 1
        if not votes or votes.most_common(1)[0][0] == claimed:
            # The header first read was the odd one (a reorg, or its source): fetch again.
            return Verdict(batch.task.task_id, False, f"block {block}: hashes disagree (a reorg?)")
        detail = f"block {block}: blockHash {claimed[:12]}… is not the block's"
        return self.auditor.wrong(batch, detail)

    def _header_source(self, name: str, upto: int) -> Source:
        """Who reads the headers for a check of `name`'s answer: another endpoint that has the
        blocks up to `upto`, else `name` itself."""
        return self.sources.pick({name}, self.ledger.trusted, upto=upto) or self.sources.all[name]

    def _affordable(self, source: Source, first: list[int], then: list[int]) -> set[int]:
        """The blocks whose headers a check reads: `first` and `then`, or as many as the
        `source`'s share of --rps has room for, `first` first and a sample of `then` (a check
        never queues behind a rate limit)."""
        room = source.room(len(first) + len(then))
        if room >= len(first) + len(then):
            return set(first) | set(then)
        return set(first[:room]) | set(self._rng.sample(then, max(0, room - len(first))))

    def _strike(self, name: str, detail: str) -> None:
        was = self.ledger.standing(name)
        standing = self.ledger.strike(name)  # (the check that found it counts the mismatch)
        if standing is Standing.SUSPECT and was is not Standing.SUSPECT:
            self.events.put(EndpointState(name, EndpointStatus.SUSPECT, detail))
            # Everything it staged so far is fetched again from the others.
            self.results.put(Distrust(name, f"{name} answered wrongly ({detail})"))
        elif standing is Standing.OUT and was is not Standing.OUT:
            self.sources.out.add(name)
            self.board.retire(name, fail_rest=True)
            reason = f"answered wrongly again ({detail})"
            self.events.put(EndpointState(name, EndpointStatus.OUT, reason, retired=True))
