"""Audits of an answer: fetched again from another endpoint and compared row for row (a third
source settles a disagreement), or, with no other endpoint, compared with the block receipts."""

from __future__ import annotations

import random
from collections.abc import Callable

import pyarrow as pa

from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.answers import fetch_range
from pipeline.fetch.rpc import RpcClient
from pipeline.fetch.spec import WorkerSpec
from pipeline.messages import Check, Checked, EventQueue, FetchedBatch, Notice, Verdict
from pipeline.verify.audit import (
    AUDIT_LOGS,
    RECEIPT_BLOCKS,
    blocks_within,
    differing_blocks,
    receipts_table,
)
from pipeline.verify.headproof import block_hashes
from pipeline.verify.sources import Source, Sources
from pipeline.verify.trust import Ledger, Standing

# Blocks whose receipts one request reads: a block's receipts, as Python objects, take ~20x its
# logs' table (an audit of 10,000 logs in one batch peaked ~35 MB higher).
RECEIPT_BATCH = 8

# A strike against an endpoint that answered wrongly: (its name, what was wrong).
Strike = Callable[[str, str], None]


class Auditor:
    """Audits for the verifier's threads; a wrong answer is a strike for its endpoint."""

    def __init__(
        self,
        spec: WorkerSpec,
        sources: Sources,
        ledger: Ledger,
        events: EventQueue,
        strike: Strike,
        rng: random.Random,
    ) -> None:
        self.spec, self.sources, self.ledger, self.events = spec, sources, ledger, events
        self.strike, self._rng = strike, rng

    def audit(self, batch: FetchedBatch, table: pa.Table, found: list[Checked]) -> Verdict:
        """Fetch the task again from another endpoint and compare; a third source settles.
        The audit's outcome goes to `found` (the check counts it once it ends)."""
        task, name = batch.task, batch.endpoint
        auditor = self.sources.pick({name}, self.ledger.trusted, upto=task.end)
        if auditor is None:
            return self._audit_receipts(batch, table, found)
        if not auditor.room(1) and self.ledger.standing(name) is Standing.TRUSTED:
            # Its share of --rps is booked: a sampled audit gives way. A new or suspect
            # endpoint's audit waits for a slot instead: under --rps no header is read, so
            # nothing else would see a log it made up.
            return Verdict(task.task_id, True)
        other = self._logs_from(auditor, batch)
        differ = differing_blocks(table, other)
        if not differ:
            found.append(Checked(name, Check.AUDIT))
            return Verdict(task.task_id, True)
        judge = self.sources.pick({name, auditor.name}, self.ledger.trusted, upto=task.end)
        blocks = set(differ[:RECEIPT_BLOCKS])
        if judge is not None:
            third, how = self._logs_from(judge, batch), judge.name
        elif auditor.has_receipts:
            third, how = self._receipts_from(auditor, sorted(blocks)), "the block receipts"
        else:
            found.append(Checked(name, Check.AUDIT, mismatch=True))  # unsettled: fetched again
            return Verdict(task.task_id, False, f"blocks {differ[0]}…: the endpoints disagree")
        answer_right = not differing_blocks(table, third, blocks)
        auditor_right = not differing_blocks(other, third, blocks)
        shown = ", ".join(map(str, differ[:3]))
        # The mismatch is the endpoint's whose rows the third source does not back.
        found.append(Checked(name, Check.AUDIT, mismatch=not answer_right))
        if auditor_right and not answer_right:
            detail = f"blocks {shown}: rows differ from {auditor.name} and {how}"
            return self.wrong(batch, detail)
        if answer_right and not auditor_right:
            detail = f"blocks {shown}: rows differ from {name}"
            found.append(Checked(auditor.name, Check.AUDIT, mismatch=True, detail=detail))
            self.strike(auditor.name, detail)
            return Verdict(task.task_id, True)
        return Verdict(task.task_id, False, f"blocks {shown}: the endpoints disagree")

    def possible(self, name: str, upto: int) -> bool:
        """Whether `name`'s answers up to block `upto` can be audited: another endpoint has
        those blocks, or its own receipts are there to compare with."""
        others = self.sources.pick({name}, self.ledger.trusted, upto=upto)
        return others is not None or self.sources.all[name].has_receipts

    def _audit_receipts(
        self, batch: FetchedBatch, table: pa.Table, found: list[Checked]
    ) -> Verdict:
        """With no other endpoint: compare the answer with the endpoint's receipts, every
        block while it is new or suspect (as many as hold AUDIT_LOGS of the answer's logs, in
        an answer larger than that), some blocks with logs once it is trusted."""
        task, name = batch.task, batch.endpoint
        source = self.sources.all[name]
        if not source.has_receipts:
            return Verdict(task.task_id, True)  # nothing to audit it against (noticed once)
        if self.ledger.standing(name) is Standing.TRUSTED:
            with_logs = sorted(block_hashes(table))
            blocks = self._rng.sample(with_logs, min(RECEIPT_BLOCKS, len(with_logs)))
            blocks = blocks[: source.room(len(blocks))]  # a sample gives way to --rps
        else:  # all of them, waiting for slots if need be (see audit())
            blocks = blocks_within(table, range(task.start, task.end + 1), AUDIT_LOGS, self._rng)
        blocks = sorted(blocks)
        return self.against_receipts(batch, table, blocks, source, Check.AUDIT, found)

    def against_receipts(
        self,
        batch: FetchedBatch,
        table: pa.Table,
        blocks: list[int],
        source: Source,
        check: Check,
        found: list[Checked],
    ) -> Verdict:
        """Compare the answer's logs of `blocks` with the receipts `source` gives of them; the
        outcome goes to `found`."""
        if not blocks:
            return Verdict(batch.task.task_id, True)
        differ = differing_blocks(table, self._receipts_from(source, blocks), set(blocks))
        found.append(Checked(batch.endpoint, check, bool(differ)))
        if differ:
            detail = f"blocks {', '.join(map(str, differ[:3]))}: rows differ from the receipts"
            return self.wrong(batch, detail)
        return Verdict(batch.task.task_id, True)

    def _logs_from(self, source: Source, batch: FetchedBatch) -> pa.Table:
        self.sources.wait(source)
        return source.ask(1, lambda c: fetch_range(c, batch.task, self.spec).table)

    def receipts_source(self, name: str, upto: int) -> Source | None:
        """Who reads receipts for a check of `name`'s answer: another endpoint with them, else
        `name` itself; None when no endpoint has eth_getBlockReceipts."""
        own = self.sources.all[name]
        return self.sources.pick({name}, self.ledger.trusted, receipts=True, upto=upto) or (
            own if own.has_receipts else None
        )

    def _receipts_from(self, source: Source, blocks: list[int]) -> pa.Table:
        """The matching logs of `blocks` from `source`'s receipts, in batches it takes."""
        self.sources.wait(source)
        spec = self.spec

        def read(client: RpcClient, chunk: list[int]) -> pa.Table:
            return receipts_table(client, chunk, spec.log_filter, spec.chain_id, spec.hex_output)

        try:
            return pa.concat_tables(source.in_batches(blocks, read, most=RECEIPT_BATCH))
        except RpcError as err:
            if err.kind is ErrorKind.PERMANENT and source.has_receipts:
                source.has_receipts = False  # the checks that need receipts ask another
                self.events.put(
                    Notice(
                        f"{source.name} has no eth_getBlockReceipts ({err}): the checks that "
                        "read receipts ask the other endpoints; with none, its answers are "
                        "not audited"
                    )
                )
            raise

    def wrong(self, batch: FetchedBatch, detail: str) -> Verdict:
        """The batch's answer was wrong: a strike for its endpoint; the task is fetched again."""
        self.strike(batch.endpoint, detail)
        reason = f"{batch.endpoint} answered wrongly: {detail}"
        return Verdict(batch.task.task_id, False, reason, liar=batch.endpoint)
