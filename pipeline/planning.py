"""Task planning: split a block range into chunk-aligned tasks, and describe ranges back."""

from __future__ import annotations

from collections.abc import Iterable

from .messages import Task


def plan_tasks(start: int, end: int, chunk_size: int) -> list[Task]:
    """Cover start..end with tasks whose boundaries fall on multiples of chunk_size.

    Aligned boundaries give the same file names whatever block a run starts from.
    """
    tasks = []
    lo = start
    while lo <= end:
        hi = min(end, (lo // chunk_size + 1) * chunk_size - 1)
        tasks.append(Task(len(tasks), lo, hi))
        lo = hi + 1
    return tasks


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge inclusive block ranges that touch or overlap, in block order."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged
