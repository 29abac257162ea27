"""Whole-request faults (FAULTS), the token bucket of a provider's rate limit, and the check
that a Profile names only things that exist."""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.dev.providers import (
    CAP_ERRORS,
    HINTS,
    LAG_MODES,
    LIARS,
    QUOTAS,
    THROTTLES,
    CapHit,
    Profile,
    Refusal,
    cap_builder,
    html_refusal,
    infura_rate_limit,
    quicknode_range,
)
from pipeline.dev.simulator.hostile import MUTATIONS
from pipeline.dev.simulator.wire import (
    DROP,
    HOLD,
    TRICKLE,
    TRUNCATE,
    Outcome,
    Reply,
    RpcRequest,
    as_reply,
)


def _refusal_fault(refusal: Refusal) -> Callable[[RpcRequest], Outcome]:
    return lambda request: as_reply(refusal, request)


# Fault kind -> outcome; each entry sees the parsed request. Profile caps, lag and throttling are
# not faults: they depend on each call's params and live in FaultProxy and pipeline.dev.providers.
FAULTS: dict[str, Callable[[RpcRequest], Outcome]] = {
    "http_500": lambda _: Reply(500, b"Internal Server Error"),
    "http_502": _refusal_fault(html_refusal(502, "Bad Gateway")),
    "http_503": lambda _: Reply(503, b"Service Unavailable"),
    "http_429": _refusal_fault(THROTTLES["retry-after"](0, 0)),
    "http_429_bare": _refusal_fault(THROTTLES["bare"](0, 0)),
    "http_429_html": _refusal_fault(THROTTLES["html"](0, 0)),
    "http_413_range": _refusal_fault(quicknode_range(CapHit(10_000, None))),
    "rpc_rate_limit": _refusal_fault(infura_rate_limit(13.333, 10.0)),
    "rpc_error": _refusal_fault(Refusal(200, {"code": -32000, "message": "internal error"})),
    "drop": lambda _: DROP,
    "timeout": lambda _: HOLD,
    "truncated": lambda _: TRUNCATE,
    "trickle": lambda _: TRICKLE,
}


class TokenBucket:
    """A rate limit: `rate` tokens a second, at most `burst` saved up; starts full."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def take(self, n: int = 1) -> bool:
        """Spend n tokens if at least one is left; False means throttled.

        A batch bigger than the burst may run the bucket into debt rather than never passing."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1 - 1e-9:  # float drift: 0.1 s at 10/s must still make a whole token
            return False
        self._tokens -= n
        return True


def check_profile(profile: Profile) -> None:
    """Raise ValueError for any field of the profile that names nothing or cannot work."""
    p = profile
    unknown = set(p.failure_kinds) - FAULTS.keys()
    if unknown:
        raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
    if p.dialect and p.dialect not in CAP_ERRORS:
        raise ValueError(f"unknown dialect {p.dialect!r}: choose from {sorted(CAP_ERRORS)}")
    choices = (("hint", HINTS), ("throttle", THROTTLES), ("lag_mode", LAG_MODES))
    liars = (("liar", ("", *LIARS)), ("liar_behind_mode", LAG_MODES))
    for name, allowed in (*choices, ("quota_mode", QUOTAS), *liars):
        if getattr(p, name) not in allowed:
            raise ValueError(f"unknown {name} {getattr(p, name)!r}: choose from {sorted(allowed)}")
    for kind, cap, least in (("range", p.range_cap, 1), ("result", p.result_cap, 0)):
        if cap is not None and cap < least:
            raise ValueError(f"{kind}_cap must be at least {least}, got {cap}")
        if cap is not None and cap_builder(p, kind) is None:
            raise ValueError(f"dialect {p.dialect!r} has no {kind}-cap error")
    if p.rps_cap is not None and p.rps_cap <= 0:
        raise ValueError(f"rps_cap must be positive, got {p.rps_cap}")
    if p.lag_blocks < 0:
        raise ValueError(f"lag_blocks must not be negative, got {p.lag_blocks}")
    if p.batch_limit is not None and p.batch_limit < 0:
        raise ValueError(f"batch_limit must not be negative, got {p.batch_limit}")
    if p.strip_block_timestamp and p.fake_block_timestamp:
        raise ValueError("strip_block_timestamp and fake_block_timestamp exclude each other")
    if not 0 <= p.hostile_rate <= 1:
        raise ValueError(f"hostile_rate must be between 0 and 1, got {p.hostile_rate}")
    unknown = set(p.hostile_kinds) - MUTATIONS.keys()
    if unknown:
        raise ValueError(
            f"unknown hostile kinds: {sorted(unknown)}: choose from {sorted(MUTATIONS)}"
        )
    if not 0 <= p.liar_rate <= 1:
        raise ValueError(f"liar_rate must be between 0 and 1, got {p.liar_rate}")
    if p.liar_after < 0:
        raise ValueError(f"liar_after must not be negative, got {p.liar_after}")
    if p.liar_lag < 0:
        raise ValueError(f"liar_lag must not be negative, got {p.liar_lag}")
