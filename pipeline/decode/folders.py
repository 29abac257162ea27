"""One distinct, stable, filesystem-safe folder name per event spec.

Rule: an event whose name no other spec shares (case-insensitively, for case-insensitive
filesystems) gets its name, e.g. `Approval`. Specs that share a name are ordered by (topic count,
canonical signature, full layout); the first keeps the bare name and each other one gets
`<name>__<k>_topics` when no other spec of the group has k topics, else `<name>__<hash>`, the
first 8 hex digits of the keccak of its full layout (types, indexed, names, anonymous). So the
ERC-20 Transfer (3 topics) is `Transfer` and the ERC-721 one (4 topics) `Transfer__4_topics`,
whatever the order of the specs. Names are the same for the same set of specs on every run.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from pipeline.decode.signature import EventSpec
from pipeline.hashing import keccak256

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
MAX_NAME = 100  # far below the 255 bytes a file name may have


def folder_names(specs: Iterable[EventSpec]) -> dict[EventSpec, str]:
    """A folder name for each spec (identical specs once), distinct even ignoring case."""
    groups: dict[str, list[EventSpec]] = {}
    for spec in dict.fromkeys(specs):
        groups.setdefault(_safe(spec.name).casefold(), []).append(spec)
    names: dict[EventSpec, str] = {}
    for group in groups.values():
        group.sort(key=lambda s: (s.topic_count, s.signature, s.layout))
        counts = Counter(s.topic_count for s in group)
        names[group[0]] = _safe(group[0].name)
        for spec in group[1:]:
            unique = counts[spec.topic_count] == 1
            suffix = f"{spec.topic_count}_topics" if unique else short_hash(spec)
            names[spec] = f"{_safe(spec.name)}__{suffix}"
    # A bare name can still meet a suffixed one (an event really called Transfer__4_topics).
    taken = Counter(n.casefold() for n in names.values())
    for spec, name in names.items():
        if taken[name.casefold()] > 1 and name != _safe(spec.name):
            names[spec] = f"{_safe(spec.name)}__{short_hash(spec)}"
    return names


def short_hash(spec: EventSpec) -> str:
    """8 hex digits that tell apart specs of the same name and topic count."""
    return keccak256(spec.layout.encode()).hex()[:8]


def _safe(name: str) -> str:
    safe = _UNSAFE.sub("_", name)  # `$` is legal in Solidity names, awkward in a shell
    return (
        safe if len(safe) <= MAX_NAME else f"{safe[:MAX_NAME]}_{keccak256(name.encode()).hex()[:8]}"
    )
