"""Task planning: cut a block range into chunk-aligned tasks, lazily, and describe ranges back."""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.messages import Task


class ChunkPlan:
    """Hands out tasks over block ranges, one at a time, with boundaries on multiples of
    chunk_size.

    Aligned boundaries give the same task ranges whatever block a run starts from; handing tasks
    out lazily keeps memory flat however long the ranges are.
    """

    def __init__(self, start: int, end: int, chunk_size: int, ranges=None) -> None:
        self.ranges: list[tuple[int, int]] = list(ranges) if ranges is not None else [(start, end)]
        self.ranges = [(a, b) for a, b in self.ranges if a <= b]
        self.chunk_size = chunk_size
        self.next_id = 0
        self._index = 0
        self.next_start = self.ranges[0][0] if self.ranges else 0
        # Tasks in the ranges after the current one, so that remaining() stays O(1).
        counts = [self._chunks(a, b) for a, b in self.ranges]
        self._after = [sum(counts[i + 1 :]) for i in range(len(counts))]

    @classmethod
    def over(cls, ranges: Iterable[tuple[int, int]], chunk_size: int) -> ChunkPlan:
        """A plan over several disjoint ranges, in block order (the gaps a resumed run fills)."""
        return cls(0, -1, chunk_size, sorted(ranges))

    @property
    def end(self) -> int:
        """The last block of the plan (-1 for an empty one)."""
        return self.ranges[-1][1] if self.ranges else -1

    def _chunks(self, lo: int, hi: int) -> int:
        return hi // self.chunk_size - lo // self.chunk_size + 1 if lo <= hi else 0

    def take(self) -> Task | None:
        """The next task, or None when the ranges are used up."""
        if self._index >= len(self.ranges):
            return None
        lo = self.next_start
        range_end = self.ranges[self._index][1]
        hi = min(range_end, (lo // self.chunk_size + 1) * self.chunk_size - 1)
        task = Task(self.next_id, lo, hi)
        self.next_id += 1
        self.next_start = hi + 1
        if hi == range_end:
            self._index += 1
            if self._index < len(self.ranges):
                self.next_start = self.ranges[self._index][0]
        return task

    def remaining(self) -> int:
        """How many tasks take() will still hand out."""
        if self._index >= len(self.ranges):
            return 0
        current = self._chunks(self.next_start, self.ranges[self._index][1])
        return current + self._after[self._index]

    def rest(self) -> list[Task]:
        """Everything not handed out yet, one task per range (for reporting)."""
        if self._index >= len(self.ranges):
            return []
        first = [Task(-1, self.next_start, self.ranges[self._index][1])]
        return first + [Task(-1, a, b) for a, b in self.ranges[self._index + 1 :]]

    def drop(self) -> None:
        """Hand out nothing more."""
        self._index = len(self.ranges)


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

    def ranges(self) -> list[tuple[int, int]]:
        """The covered ranges in block order."""
        return sorted(self._by_start.items())

    @property
    def blocks(self) -> int:
        """How many blocks are covered."""
        return sum(hi - lo + 1 for lo, hi in self._by_start.items())
