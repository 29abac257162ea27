"""Task planning: cut a block range into tasks, lazily, and describe ranges back.

Task sizes are either pinned (--chunk-size) or adaptive: each next task is sized so that its
answer holds about TARGET_LOGS logs, from the logs per block the stored tasks showed so far.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from pipeline.config.options import FIRST_TASK_BLOCKS
from pipeline.messages import Task

# Adaptive sizing. A task is sized for at most TARGET_LOGS logs: the result cap of common
# providers (Alchemy, Infura), ~5 MB of JSON (~0.55 KB a log). Sizes round down, so on an even
# chain a task holds 0.4-1x the target; below a few thousand logs a task, its fixed cost (~5 ms
# of CPU across the processes, about what 1,000 logs cost) starts to show (measured on anvil).
TARGET_LOGS = 10_000
MIN_TASK_BLOCKS = 1
MAX_TASK_BLOCKS = 100_000
# A task is at most this many times as wide as the blocks the estimate rests on, so that one
# quiet stretch never sizes a giant task that could run into a busy one.
REACH = 2.0
DECAY = 0.5  # each stored task halves the weight of what was learned before it
# The first guess is small (FIRST_TASK_BLOCKS, 100): a dense start then costs one answer of a
# few thousand logs instead of a whole 1,000-block one (170,000 logs, a second of the node's work
# with nothing else in flight, on the bench chain); a sparse start costs a few more requests of a
# few ms while REACH widens the tasks. Before any answer is measured, every further task is half
# the previous one, down to this share of the first guess: one guessed task per endpoint, not more.
SLOW_START_FLOOR = 0.1


@dataclass
class Density:
    """Logs per block of the latest stored tasks: sums weighted by blocks (a wide task says more
    than a one-block piece), what was learned before fading by DECAY at each new task."""

    logs: float = 0.0
    blocks: float = 0.0

    def add(self, blocks: int, logs: int) -> None:
        """Learn from one stored task of `blocks` blocks holding `logs` logs."""
        self.logs = self.logs * DECAY + logs
        self.blocks = self.blocks * DECAY + blocks

    @property
    def per_block(self) -> float | None:
        """The estimate, or None before any task was measured."""
        return self.logs / self.blocks if self.blocks else None


class ChunkPlan:
    """Hands out tasks over block ranges, one at a time, each ending on a multiple of its size.

    With chunk_size given, every size is chunk_size (pinned). With chunk_size None the size adapts
    (see `size`): the first task is `first_guess` blocks, later ones are sized to about
    `target_logs` logs from what `learn` was told. Aligned boundaries give the same task ranges
    whatever block a run starts from; handing tasks out lazily keeps memory flat however long the
    ranges are.
    """

    def __init__(
        self,
        start: int,
        end: int,
        chunk_size: int | None = None,
        ranges: Iterable[tuple[int, int]] | None = None,
        *,
        first_guess: int = FIRST_TASK_BLOCKS,
        target_logs: int | None = None,
    ) -> None:
        self.ranges: list[tuple[int, int]] = list(ranges) if ranges is not None else [(start, end)]
        self.ranges = [(a, b) for a, b in self.ranges if a <= b]
        self.chunk_size = chunk_size  # None: adaptive
        self.first_guess = first_guess
        self.target_logs = target_logs or TARGET_LOGS  # read now: a run's parent may set it
        self.density = Density()
        self._guess = float(first_guess)  # the adaptive size while nothing is measured
        self.next_id = 0
        self._index = 0
        self.next_start = self.ranges[0][0] if self.ranges else 0
        # What lies in the ranges after the current one, so that remaining() stays O(1).
        blocks = [b - a + 1 for a, b in self.ranges]
        self._blocks_after = [sum(blocks[i + 1 :]) for i in range(len(blocks))]
        counts = [self._chunks(a, b, chunk_size) for a, b in self.ranges] if chunk_size else []
        self._after = [sum(counts[i + 1 :]) for i in range(len(counts))]

    @classmethod
    def over(
        cls, ranges: Iterable[tuple[int, int]], chunk_size: int | None = None, **sizing: int
    ) -> ChunkPlan:
        """A plan over several disjoint ranges, in block order (the gaps a resumed run fills);
        chunk_size None sizes tasks adaptively."""
        return cls(0, -1, chunk_size, sorted(ranges), **sizing)

    @property
    def end(self) -> int:
        """The last block of the plan (-1 for an empty one)."""
        return self.ranges[-1][1] if self.ranges else -1

    @property
    def adaptive(self) -> bool:
        """True when task sizes follow the density (no --chunk-size given)."""
        return self.chunk_size is None

    @staticmethod
    def _chunks(lo: int, hi: int, size: int) -> int:
        return hi // size - lo // size + 1 if lo <= hi else 0

    def learn(self, blocks: int, logs: int) -> None:
        """A task of `blocks` blocks was stored with `logs` logs: the next sizes follow."""
        self.density.add(blocks, logs)

    def size(self) -> int:
        """Blocks of the next task: the pinned chunk size, else target_logs over the logs per
        block seen so far, at most REACH times the blocks that estimate rests on and within
        MIN_TASK_BLOCKS..MAX_TASK_BLOCKS, rounded down to 1, 2, 5, 10, 20, 50 ...; before any
        task is measured, the first guess, halved at each further task."""
        if self.chunk_size is not None:
            return self.chunk_size
        density = self.density.per_block
        if density is None:
            return round_size(self._guess)
        wanted = self.target_logs / density if density > 0 else math.inf
        reach = REACH * self.density.blocks
        return round_size(max(MIN_TASK_BLOCKS, min(wanted, reach, MAX_TASK_BLOCKS)))

    def take(self) -> Task | None:
        """The next task, or None when the ranges are used up."""
        if self._index >= len(self.ranges):
            return None
        lo = self.next_start
        range_end = self.ranges[self._index][1]
        size = self.size()
        hi = min(range_end, (lo // size + 1) * size - 1)
        task = Task(self.next_id, lo, hi)
        self.next_id += 1
        self.next_start = hi + 1
        if hi == range_end:
            self._index += 1
            if self._index < len(self.ranges):
                self.next_start = self.ranges[self._index][0]
        if self.adaptive and self.density.per_block is None:
            self._guess = max(self.first_guess * SLOW_START_FLOOR, self._guess / 2)
        return task

    def remaining(self) -> int:
        """How many tasks take() will still hand out: exact when pinned, an estimate at the
        current size when adaptive (0 only when nothing is left either way)."""
        if self._index >= len(self.ranges):
            return 0
        size = self.size()
        current = self._chunks(self.next_start, self.ranges[self._index][1], size)
        if not self.adaptive:
            return current + self._after[self._index]
        later = len(self.ranges) - self._index - 1
        return current + max(later, math.ceil(self._blocks_after[self._index] / size))

    def rest(self) -> list[Task]:
        """Everything not handed out yet, one task per range (for reporting)."""
        if self._index >= len(self.ranges):
            return []
        first = [Task(-1, self.next_start, self.ranges[self._index][1])]
        return first + [Task(-1, a, b) for a, b in self.ranges[self._index + 1 :]]

    def drop(self) -> None:
        """Hand out nothing more."""
        self._index = len(self.ranges)


def round_size(blocks: float) -> int:
    """The largest of 1, 2, 5, 10, 20, 50 ... that is at most `blocks` (1 below that): each
    divides 100,000, so aligned tasks never cross a default file window."""
    whole = max(1, int(blocks))
    power = 10 ** (len(str(whole)) - 1)
    return next(step * power for step in (5, 2, 1) if step * power <= whole)


def split_point(task: Task, hint: tuple[int, int] | None, max_blocks: int | None) -> int:
    """Where to cut a task (2+ blocks) an endpoint refused as too big: at the provider's hinted
    range when it lies strictly inside and is smaller, else at its stated width, else in half.
    Returns the last block of the first piece."""
    start, end = task.start, task.end
    if hint is not None:
        lo, hi = hint
        if start <= lo <= hi <= end and hi - lo < end - start:
            return hi if hi < end else lo - 1
    if max_blocks is not None and 1 <= max_blocks < task.blocks:
        return start + max_blocks - 1
    return start + task.blocks // 2 - 1


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge inclusive block ranges that touch or overlap, in block order."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def gaps(start: int, end: int, covered: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of start..end that no range in `covered` touches."""
    missing, lo = [], start
    for a, b in merge_ranges(covered):
        if a > lo:
            missing.append((lo, min(a - 1, end)))
        lo = max(lo, b + 1)
    if lo <= end:
        missing.append((lo, end))
    return [(a, b) for a, b in missing if a <= b]


class Coverage:
    """Disjoint block ranges stored so far, merged as they arrive (O(1) for adjacent ones), so
    memory stays flat however many tasks a run writes."""

    def __init__(self) -> None:
        self._by_start: dict[int, int] = {}
        self._by_end: dict[int, int] = {}

    def add(self, lo: int, hi: int) -> None:
        """Record lo..hi (inclusive) as covered; it must not overlap what is already covered."""
        if (left := self._by_end.pop(lo - 1, None)) is not None:
            del self._by_start[left]
            lo = left
        if (right := self._by_start.pop(hi + 1, None)) is not None:
            del self._by_end[right]
            hi = right
        self._by_start[lo] = hi
        self._by_end[hi] = lo

    def remove(self, lo: int, hi: int) -> None:
        """Forget lo..hi (inclusive), which must have been covered: a dropped answer's blocks
        are fetched again (rare: a scan of the ranges is fine)."""
        start = next(a for a, b in self._by_start.items() if a <= lo and hi <= b)
        end = self._by_start.pop(start)
        del self._by_end[end]
        for part_lo, part_hi in ((start, lo - 1), (hi + 1, end)):
            if part_lo <= part_hi:
                self._by_start[part_lo] = part_hi
                self._by_end[part_hi] = part_lo

    def ranges(self) -> list[tuple[int, int]]:
        """The covered ranges in block order."""
        return sorted(self._by_start.items())

    @property
    def blocks(self) -> int:
        """How many blocks are covered."""
        return sum(hi - lo + 1 for lo, hi in self._by_start.items())


class Run(NamedTuple):
    """A contiguous run of fragments: its blocks, rows and how many fragments it joins."""

    start: int
    end: int
    rows: int
    fragments: int = 1


class Runs:
    """The contiguous runs of a window's fragments, each with its rows, joined as fragments
    come: a fragment's run and its size are known at once, however many there are."""

    def __init__(self) -> None:
        self._ends: dict[int, tuple[int, int, int]] = {}  # first block -> last, rows, fragments
        self._starts: dict[int, int] = {}  # last block -> first block

    @classmethod
    def of(cls, fragments: list[tuple[int, int, int]]) -> Runs:
        """The runs of these fragments (lo, hi, rows)."""
        runs = cls()
        for fragment in fragments:
            runs.add(*fragment)
        return runs

    def add(self, lo: int, hi: int, rows: int) -> Run:
        """Join fragment lo..hi to the runs it touches; the run it is in now."""
        start, end, count = lo, hi, 1
        if (before := self._starts.pop(lo - 1, None)) is not None:
            _, more, joined = self._ends.pop(before)
            start, rows, count = before, rows + more, count + joined
        if (after := self._ends.pop(hi + 1, None)) is not None:
            end, rows, count = after[0], rows + after[1], count + after[2]
            del self._starts[end]
        self._ends[start], self._starts[end] = (end, rows, count), start
        return Run(start, end, rows, count)

    def remove(self, start: int) -> None:
        """Forget the run that begins at `start`."""
        end, *_ = self._ends.pop(start)
        del self._starts[end]
