"""What a worker does about each class of failure: the one table of reactions."""

from __future__ import annotations

from pipeline.errors import ErrorKind
from pipeline.messages import Reaction

# What a worker does about each error class (see messages.Reaction); any other class: RETRY.
REACTIONS: dict[ErrorKind, Reaction] = {
    ErrorKind.RANGE_TOO_LARGE: Reaction.SPLIT,
    ErrorKind.TOO_MANY_RESULTS: Reaction.SPLIT,
    ErrorKind.RESPONSE_TOO_BIG: Reaction.SPLIT,
    ErrorKind.RATE_LIMITED: Reaction.THROTTLE,
    ErrorKind.QUOTA: Reaction.RETIRE,
    ErrorKind.UNAUTHORIZED: Reaction.RETIRE,
    ErrorKind.MOVED: Reaction.RETIRE,
    ErrorKind.TOO_MANY_FILTERS: Reaction.RETIRE,
    ErrorKind.BEYOND_HEAD: Reaction.BEHIND,
    ErrorKind.PRUNED: Reaction.EXCLUDE,
}
# What a failed header request (for the block timestamps) may lead to: its task has no range to
# split or exclude for it, and a header says nothing of the filter's size.
HEADER_REACTIONS = frozenset({Reaction.THROTTLE, Reaction.BEHIND, Reaction.RETRY})
