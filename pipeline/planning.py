"""Task planning: cut a block range into chunk-aligned tasks, lazily, and describe ranges back."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .messages import Task


@dataclass
class ChunkPlan:
    """Hands out tasks whose boundaries fall on multiples of chunk_size, one at a time.

    Aligned boundaries give the same file names whatever block a run starts from; handing tasks
    out lazily keeps memory flat however long the range is.
    """

    start: int
    end: int
    chunk_size: int
    next_start: int = field(init=False)
    next_id: int = 0

    def __post_init__(self) -> None:
        self.next_start = self.start

    def take(self) -> Task | None:
        """The next task, or None when the range is used up."""
        if self.next_start > self.end:
            return None
        lo = self.next_start
        hi = min(self.end, (lo // self.chunk_size + 1) * self.chunk_size - 1)
        task = Task(self.next_id, lo, hi)
        self.next_id += 1
        self.next_start = hi + 1
        return task

    def remaining(self) -> int:
        """How many tasks take() will still hand out."""
        if self.next_start > self.end:
            return 0
        return self.end // self.chunk_size - self.next_start // self.chunk_size + 1

    def rest(self) -> Task | None:
        """Everything not handed out yet, as one range (for reporting)."""
        if self.next_start > self.end:
            return None
        return Task(-1, self.next_start, self.end)


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


def plan_tasks(start: int, end: int, chunk_size: int) -> list[Task]:
    """All tasks of start..end at once (for tests and small ranges)."""
    plan = ChunkPlan(start, end, chunk_size)
    return list(iter(plan.take, None))


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
