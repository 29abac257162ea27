"""Fault-injecting JSON-RPC proxy that makes a local node behave like a (bad) hosted provider.

Request path: parse the body -> plan (latency, fault) from the seeded RNG -> whole-request refusals
(unauthorized, quota, rate limit, then an injected fault from FAULTS) -> either forward the body
verbatim, or, when the profile caps, lags, prunes or lies and the request holds calls that
concern, answer call by call: a batch is split, each call handled on its own, the array
reassembled in order. A hostile profile spoils some eth_getLogs answers (hostile.py); others leave
out or falsify the logs' blockTimestamp (stamps.py), or refuse JSON-RPC batches over a size; a
liar answers eth_getLogs wrongly with HTTP 200 and no error (liars.py). The providers' exact error
shapes live in pipeline.dev.providers.

Modules: wire (requests, replies, outcomes), faults (whole-request faults, the rate limit's bucket,
the profile check), hostile (spoiled answers), liars (wrong answers), stamps (missing or wrong
block timestamps), calls (answers call by call), proxy (FaultProxy), server (HTTP), __main__ (the
command line). None imports one that imports it back: what a module needs from another one above
it is passed in.
"""

from __future__ import annotations

# Profile and PROFILES are imported from here by the rest of the code.
from pipeline.dev.providers import PROFILES, Profile
from pipeline.dev.simulator.faults import FAULTS, TokenBucket, check_profile
from pipeline.dev.simulator.hostile import MUTATIONS, HostileAnswers
from pipeline.dev.simulator.liars import Liars, orphan_hash
from pipeline.dev.simulator.proxy import HISTORY_LIMIT, FaultProxy
from pipeline.dev.simulator.server import HOLD_SECONDS, UPSTREAM_TIMEOUT
from pipeline.dev.simulator.wire import (
    DROP,
    HEAD_TAGS,
    HOLD,
    TRICKLE,
    TRICKLE_INTERVAL_S,
    TRUNCATE,
    Outcome,
    Reply,
    RpcRequest,
    as_reply,
    parse_request,
)

__all__ = [
    "DROP",
    "FAULTS",
    "HEAD_TAGS",
    "HISTORY_LIMIT",
    "HOLD",
    "HOLD_SECONDS",
    "MUTATIONS",
    "PROFILES",
    "TRICKLE",
    "TRICKLE_INTERVAL_S",
    "TRUNCATE",
    "UPSTREAM_TIMEOUT",
    "FaultProxy",
    "HostileAnswers",
    "Liars",
    "Outcome",
    "Profile",
    "Reply",
    "RpcRequest",
    "TokenBucket",
    "as_reply",
    "check_profile",
    "orphan_hash",
    "parse_request",
]
