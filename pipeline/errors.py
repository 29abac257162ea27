"""The failures the tool can meet: bad input, and RPC faults by kind (classified in
pipeline.fetch.classify, the one place that reads providers' error shapes)."""

from __future__ import annotations

import enum
from typing import Any


class ConfigError(ValueError):
    """Bad usage or input; the message is one line that says what to fix (exit code 2)."""


class NoEndpointError(RuntimeError):
    """No endpoint answered at all (exit code 1); nothing has been written."""


class ErrorKind(enum.StrEnum):
    """What went wrong with one RPC request, as far as the tool needs to react to it."""

    RANGE_TOO_LARGE = "range_too_large"
    TOO_MANY_RESULTS = "too_many_results"
    RESPONSE_TOO_BIG = "response_too_big"
    TOO_MANY_FILTERS = "too_many_filters"
    RATE_LIMITED = "rate_limited"
    QUOTA = "quota_exhausted"
    UNAUTHORIZED = "unauthorized"
    BEYOND_HEAD = "beyond_head"
    PRUNED = "pruned_history"
    TIMEOUT = "timeout"
    CONNECTION = "connection_error"
    SERVER = "server_error"
    MALFORMED = "malformed_response"
    PERMANENT = "permanent"
    MOVED = "moved"  # HTTP 301/302/303: the URL redirects, and a POST cannot follow
    # An answer another source contradicts: a block hash that is not the block's, a log its
    # block's bloom excludes, rows that another endpoint or the block receipts disagree with.
    INCORRECT = "incorrect_answer"


class RpcError(Exception):
    """A classified failure of one request to one endpoint.

    `hint` is a (from, to) block range the provider suggested, exactly as given and unchecked;
    `max_blocks` is a block-range width limit the provider stated; `retry_after` is in seconds."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        retry_after: float | None = None,
        hint: tuple[int, int] | None = None,
        max_blocks: int | None = None,
    ) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        self.hint = hint
        self.max_blocks = max_blocks

    @property
    def about_batch(self) -> bool:
        """The refusal names the JSON-RPC batch (a limit on calls a request): a smaller batch,
        not a pause, is the answer; whatever kind its wording made it."""
        return "batch" in self.message.lower()

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"

    def __repr__(self) -> str:
        return f"RpcError({self.kind.value}, {self.message!r})"  # never the unscrubbed args

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the current fields: callers rewrite `message` to scrub secrets, and the
        # original text in `args` must not travel to another process.
        fields = (self.kind, self.message, self.retry_after, self.hint, self.max_blocks)
        return type(self), fields
