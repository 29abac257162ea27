"""What simulated providers are like: named profiles, and the exact error shapes real hosted
providers refuse requests with.

Shapes are data, not behaviour: the proxy (pipeline.dev.simulator) decides *when* a cap, throttle or
quota applies and asks these tables *how* that provider says so. Messages are copied from real
provider answers; only the numbers (caps, hint ranges, rates) are filled in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Hint = tuple[int, int]  # an inclusive block range a refusal suggests instead

HINTS = ("valid", "echo", "inverted", "outside", "none")
LAG_MODES = ("empty", "partial")
# Liars answer eth_getLogs wrongly with HTTP 200 and no error (pipeline.dev.simulator.liars).
LIARS = ("behind", "drops", "blanks", "orphans", "truncates", "fabricates")


@dataclass(frozen=True)
class Refusal:
    """One provider refusal: an HTTP status with a JSON-RPC error object (sent per call, with the
    call's id) or, when `error` is None, a raw body."""

    status: int
    error: dict[str, Any] | None = None
    body: bytes = b""
    content_type: str = "text/plain"
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CapHit:
    """What a cap builder needs: the cap that was exceeded, the hint to quote (None: no hint) and
    the provider's other limits (Alchemy quotes both in one message)."""

    cap: int
    hint: Hint | None
    range_cap: int | None = None
    result_cap: int | None = None


CapBuilder = Callable[[CapHit], Refusal]


@dataclass(frozen=True)
class CapDialect:
    """One provider's eth_getLogs refusals; None where that provider has no such cap."""

    range_error: CapBuilder | None = None
    result_error: CapBuilder | None = None


def hint_range(mode: str, start: int, end: int, valid_end: int) -> Hint | None:
    """The range a refusal of [start, end] suggests, per hint mode; valid_end ends the real fit."""
    if mode == "valid":
        return (start, valid_end)
    if mode == "echo":
        return (start, end)
    if mode == "inverted":
        return (end, start)
    if mode == "outside":
        return (end + 1, end + 1 + (end - start))  # as wide as asked, entirely after it
    return None


def html_refusal(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Refusal:
    """An nginx/CDN-style HTML error page, as providers' edges return it (no JSON at all)."""
    title = f"{status} {reason}"
    page = f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
    page += "<hr><center>nginx</center></body></html>\n"
    return Refusal(status, body=page.encode(), content_type="text/html", headers=headers or {})


def _error(code: int, message: str, status: int = 200, data: dict | None = None) -> Refusal:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return Refusal(status, error)


def _short(n: int) -> str:
    # Alchemy writes round thousands as "2K" / "10K"; anything else stays a plain number.
    return f"{n // 1000}K" if n >= 1000 and n % 1000 == 0 else str(n)


def _infura_results(hit: CapHit) -> Refusal:
    message = f"query returned more than {hit.cap} results"
    if hit.hint is None:
        return _error(-32005, message)
    low, high = (f"0x{n:X}" for n in hit.hint)  # Infura writes upper-case hex digits
    hinted = f"{message}. Try with this block range [{low}, {high}]."
    return _error(-32005, hinted, data={"from": low, "to": high})


def _alchemy_results(hit: CapHit) -> Refusal:
    message = (
        "Log response size exceeded. You can make eth_getLogs requests with up to a "
        f"{_short(hit.range_cap or 2000)} block range and no limit on the response size, or you "
        f"can request any block range with a cap of {_short(hit.cap)} logs in the response."
    )
    if hit.hint is not None:
        message += (
            " Based on your parameters and the response size limit, this block range should work: "
            f"[{hex(hit.hint[0])}, {hex(hit.hint[1])}]"
        )
    return _error(-32602, message)


def _alchemy_range(hit: CapHit) -> Refusal:
    message = f"You can make eth_getLogs requests with up to a {hit.cap} block range."
    if hit.hint is not None:
        message = message[:-1] + (
            ". Based on your parameters, this block range should work: "
            f"[{hex(hit.hint[0])}, {hex(hit.hint[1])}]"
        )
    return _error(-32600, message)


def quicknode_range(hit: CapHit) -> Refusal:
    """QuickNode's range cap: HTTP 413 carrying a JSON-RPC error (no hint, ever)."""
    return _error(-32614, f"eth_getLogs is limited to a {hit.cap:,} range", status=413)


def _reth_results(hit: CapHit) -> Refusal:
    # reth's wording, served by Ankr, dRPC, Blast and others running reth.
    message = f"query exceeds max results {hit.cap}"
    if hit.hint is not None:
        message += f", retry with the range {hit.hint[0]}-{hit.hint[1]}"
    return _error(-32602, message)


CAP_ERRORS: dict[str, CapDialect] = {
    "infura": CapDialect(result_error=_infura_results),
    "alchemy": CapDialect(range_error=_alchemy_range, result_error=_alchemy_results),
    "quicknode": CapDialect(range_error=quicknode_range),
    "reth": CapDialect(
        range_error=lambda hit: _error(-32602, f"query exceeds max block range {hit.cap}"),
        result_error=_reth_results,
    ),
    "ankr": CapDialect(
        range_error=lambda _: _error(-32600, "block range is too wide"),
        result_error=_reth_results,
    ),
    "drpc": CapDialect(
        range_error=lambda hit: _error(
            35, f"ranges over {hit.cap} blocks are not supported on freetier"
        ),
        result_error=_reth_results,
    ),
    "publicnode": CapDialect(
        range_error=lambda hit: _error(-32000, f"exceed maximum block range: {hit.cap}")
    ),
}
# Profile.dialect "" picks these: the best-known shape of each kind of cap.
DEFAULT_DIALECTS = {"range": "quicknode", "result": "infura"}


def infura_rate_limit(current_rps: float, allowed_rps: float) -> Refusal:
    """Infura's throttle: HTTP 200 with a JSON-RPC -32005 error that carries the rates."""
    data = {
        "see": "https://infura.io/dashboard",
        "current_rps": round(current_rps, 3),
        "allowed_rps": round(allowed_rps, 3),
        "backoff_seconds": 0,
    }
    return _error(-32005, "project ID request rate exceeded", data=data)


# Throttle style -> refusal, given (current rps, allowed rps).
THROTTLES: dict[str, Callable[[float, float], Refusal]] = {
    "retry-after": lambda *_: Refusal(429, body=b"Too Many Requests", headers={"Retry-After": "1"}),
    "bare": lambda *_: Refusal(429, body=b"Too Many Requests"),
    "html": lambda *_: html_refusal(429, "Too Many Requests"),
    "infura": infura_rate_limit,
}

_QUOTA_TEXT = (
    "Monthly capacity limit exceeded. Visit https://dashboard.alchemy.com/settings/billing "
    "to upgrade your scaling policy for continued service."
)
# Alchemy has sent both: a bare text body, and the same sentence as a JSON-RPC error.
QUOTAS: dict[str, Refusal] = {
    "text": Refusal(403, body=_QUOTA_TEXT.encode()),
    "rpc": _error(-32600, _QUOTA_TEXT, status=403),
}
# A method the node does not have (geth's and anvil's wording): eth_getBlockReceipts on older
# nodes and on other implementations.
METHOD_NOT_FOUND = Refusal(
    200, {"code": -32601, "message": "the method does not exist/is not available"}
)
UNAUTHORIZED = _error(-32000, "invalid project id", status=401)
PRUNED = _error(4444, "pruned history unavailable")


def batch_refusal(limit: int) -> Refusal:
    """A batch over the provider's limit: with no batches at all (0), one error object for the
    whole request (as Cloudflare's gateway answers); otherwise the error for every call (dRPC's
    free tier, whose wording would read as a quota without the word "batch")."""
    if limit == 0:
        return _error(-32600, "batch requests are not supported")
    return _error(
        -32600, f"Batch of more than {limit} requests are not allowed on free tier, upgrade plan"
    )


def cap_builder(profile: Profile, kind: str) -> CapBuilder | None:
    """The builder of the profile's "range" or "result" cap error (None: the dialect has none)."""
    dialect = CAP_ERRORS[profile.dialect or DEFAULT_DIALECTS[kind]]
    return dialect.range_error if kind == "range" else dialect.result_error


@dataclass(frozen=True)
class Profile:
    """How one simulated provider behaves; every random choice comes from `seed`.

    Every field after `seed` defaults to "off"; see pipeline.dev.providers for the error shapes."""

    name: str = "healthy"
    latency_ms: tuple[float, float] = (0.0, 0.0)  # uniform extra delay per request, min..max
    failure_rate: float = 0.0  # probability that a request gets a fault
    failure_kinds: tuple[str, ...] = ("http_500", "http_503", "http_429", "drop")  # keys of FAULTS
    dead: bool = False  # from the start: connection refused
    die_after: int | None = None  # after this many requests the endpoint goes dead
    seed: int = 0
    description: str = ""  # one line for `--list` and `pipeline demo`
    range_cap: int | None = None  # max blocks (toBlock - fromBlock + 1) in one eth_getLogs
    result_cap: int | None = None  # max logs in one eth_getLogs answer
    dialect: str = ""  # whose error shape the caps use: a CAP_ERRORS key; "" = usual per cap
    hint: str = "valid"  # the range a cap error suggests: valid, echo, inverted, outside, none
    rps_cap: float | None = None  # the provider's own rate limit, calls per second
    throttle: str = "retry-after"  # how a call over rps_cap is answered: a THROTTLES key
    lag_blocks: int = 0  # this node's head trails the upstream head by this many blocks
    lag_mode: str = "empty"  # eth_getLogs past its head: "empty" answers [], "partial" cuts it
    quota_after: int | None = None  # after this many requests: HTTP 403 capacity exceeded
    quota_mode: str = "text"  # that 403's body: "text", or "rpc" for a JSON-RPC error
    unauthorized: bool = False  # every request: HTTP 401 invalid project id
    pruned_below: int | None = None  # eth_getLogs from below this block: 4444 pruned history
    hostile_rate: float = 0.0  # probability that a successful eth_getLogs answer is spoiled
    hostile_kinds: tuple[str, ...] = ()  # how: keys of simulator.hostile.MUTATIONS; () = all
    strip_block_timestamp: bool = False  # eth_getLogs answers without blockTimestamp (older nodes)
    fake_block_timestamp: bool = False  # every blockTimestamp an hour late, one log in ten zero
    batch_limit: int | None = None  # most calls a JSON-RPC batch may hold; 0: no batches at all
    missing_methods: tuple[str, ...] = ()  # answered "method not found" (-32601), per call
    liar: str = ""  # wrong eth_getLogs answers, HTTP 200 and no error: a LIARS kind; "" = honest
    liar_rate: float = 0.1  # drops/orphans/truncates/fabricates: share of the answers spoiled
    liar_after: int = 0  # ... after this many answers it could have spoiled came back honest
    liar_lag: int = 40  # behind: the eth_getLogs backend trails the true head by this many blocks
    liar_behind_mode: str = "empty"  # behind, past that head: "empty" answers [], "partial" cuts
    liar_split_batches: bool = False  # behind: a batch's other calls go to the up-to-date backend


# Sized for the test chain: ~60,000 logs over ~3,000 blocks (~20 a block), chunks of 100-1000.
_RESULT_CAP = 1000
PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("healthy", description="answers everything promptly"),
        Profile("fast", latency_ms=(1, 3), description="1-3 ms latency"),
        Profile("medium", latency_ms=(15, 30), description="15-30 ms latency"),
        Profile("slow", latency_ms=(60, 120), description="60-120 ms latency"),
        Profile(
            "flaky",
            latency_ms=(20, 60),
            failure_rate=0.3,
            description="20-60 ms; 30% of requests fail (HTTP 500/503/429, dropped connection)",
        ),
        Profile(
            "slow-flaky",
            latency_ms=(80, 150),
            failure_rate=0.2,
            description="80-150 ms; 20% of requests fail (HTTP 500/503/429, dropped connection)",
        ),
        Profile("dead", dead=True, description="refuses every connection"),
        Profile("dies-mid-run", die_after=40, description="answers 40 requests, then goes dead"),
        Profile(
            "range-cap",
            range_cap=100,
            dialect="quicknode",
            description="eth_getLogs over 100 blocks: HTTP 413, -32614 (QuickNode)",
        ),
        Profile(
            "range-cap-alchemy",
            range_cap=100,
            dialect="alchemy",
            description="eth_getLogs over 100 blocks: -32600 naming a range that works (Alchemy)",
        ),
        Profile(
            "range-cap-no-number",
            range_cap=100,
            dialect="ankr",
            description="eth_getLogs over 100 blocks: -32600 'block range is too wide', no limit",
        ),
        Profile(
            "range-cap-reth",
            range_cap=100,
            dialect="reth",
            description="eth_getLogs over 100 blocks: -32602 'query exceeds max block range 100'",
        ),
        Profile(
            "range-cap-publicnode",
            range_cap=100,
            dialect="publicnode",
            description="eth_getLogs over 100 blocks: -32000 'exceed maximum block range: 100'",
        ),
        Profile(
            "range-cap-drpc",
            range_cap=100,
            dialect="drpc",
            description="eth_getLogs over 100 blocks: code 35, 'not supported on freetier' (dRPC)",
        ),
        Profile(
            "result-cap",
            result_cap=_RESULT_CAP,
            dialect="infura",
            description="eth_getLogs over 1,000 logs: -32005 naming a range that fits (Infura)",
        ),
        Profile(
            "result-cap-alchemy",
            result_cap=_RESULT_CAP,
            dialect="alchemy",
            description="eth_getLogs over 1,000 logs: -32602 'Log response size exceeded'",
        ),
        Profile(
            "result-cap-ankr",
            result_cap=_RESULT_CAP,
            dialect="ankr",
            description="eth_getLogs over 1,000 logs: -32602 'query exceeds max results' (Ankr)",
        ),
        Profile(
            "hint-echo",
            result_cap=_RESULT_CAP,
            hint="echo",
            description="result cap 1,000 whose error suggests the very range it refused",
        ),
        Profile(
            "hint-inverted",
            result_cap=_RESULT_CAP,
            hint="inverted",
            description="result cap 1,000 whose error suggests a range with from and to swapped",
        ),
        Profile(
            "hint-outside",
            result_cap=_RESULT_CAP,
            hint="outside",
            description="result cap 1,000 whose error suggests a range after the one asked for",
        ),
        Profile(
            "hint-none",
            result_cap=_RESULT_CAP,
            hint="none",
            description="result cap 1,000 whose error names no range",
        ),
        Profile(
            "tiny-result-cap",
            result_cap=5,
            description="eth_getLogs over 5 logs: even one block fails; eth_getBlockReceipts works",
        ),
        Profile(
            "rate-limited",
            rps_cap=20,
            description="over 20 requests/s: HTTP 429 with Retry-After: 1",
        ),
        Profile(
            "rate-limited-bare",
            rps_cap=20,
            throttle="bare",
            description="over 20 requests/s: HTTP 429 without Retry-After",
        ),
        Profile(
            "rate-limited-html",
            rps_cap=20,
            throttle="html",
            description="over 20 requests/s: an HTML 429 page from the edge",
        ),
        Profile(
            "rate-limited-infura",
            rps_cap=20,
            throttle="infura",
            description="over 20 calls/s: HTTP 200, -32005 'project ID request rate exceeded'",
        ),
        Profile(
            "truncated",
            failure_rate=0.2,
            failure_kinds=("truncated",),
            seed=1,
            description="20% of answers cut off halfway (HTTP 200, half a JSON body)",
        ),
        Profile(
            "drops",
            failure_rate=0.2,
            failure_kinds=("drop",),
            seed=2,
            description="20% of requests: connection closed without an answer",
        ),
        Profile(
            "hangs",
            failure_rate=0.1,
            failure_kinds=("timeout",),
            seed=3,
            description="10% of requests never answered (hang past any client timeout)",
        ),
        Profile(
            "trickles",
            failure_rate=0.1,
            failure_kinds=("trickle",),
            seed=4,
            description="10% of answers sent a byte every 0.5 s: no read times out, none ends",
        ),
        Profile(
            "lagging",
            lag_blocks=500,
            description="head 500 blocks behind; eth_getLogs past it silently answers []",
        ),
        Profile(
            "lagging-partial",
            lag_blocks=500,
            lag_mode="partial",
            description="head 500 blocks behind; eth_getLogs silently drops logs past it",
        ),
        Profile(
            "billing",
            quota_after=30,
            description="after 30 requests: HTTP 403 'Monthly capacity limit exceeded' (Alchemy)",
        ),
        Profile(
            "billing-rpc",
            quota_after=30,
            quota_mode="rpc",
            description="after 30 requests: HTTP 403 with a JSON-RPC capacity error (Alchemy)",
        ),
        Profile("unauthorized", unauthorized=True, description="HTTP 401 'invalid project id'"),
        Profile(
            "pruned",
            pruned_below=1000,
            description="eth_getLogs from below block 1,000: 4444 'pruned history unavailable'",
        ),
        Profile(
            "hostile",
            hostile_rate=0.3,
            seed=5,
            description="30% of eth_getLogs answers spoiled: bad numbers, types, nesting, hashes",
        ),
        Profile(
            "no-block-timestamp",
            strip_block_timestamp=True,
            description="logs without blockTimestamp (geth before 1.16): timestamps from headers",
        ),
        Profile(
            "wrong-block-timestamp",
            fake_block_timestamp=True,
            seed=6,
            description="every blockTimestamp an hour late, one log in ten zero: a lying node",
        ),
        Profile(
            "no-batches",
            strip_block_timestamp=True,
            batch_limit=0,
            description="no blockTimestamp, and JSON-RPC batches refused: headers one by one",
        ),
        Profile(
            "no-receipts",
            missing_methods=("eth_getBlockReceipts",),
            description="no eth_getBlockReceipts: -32601 method not found (older nodes)",
        ),
        Profile(
            "batches-of-2",
            strip_block_timestamp=True,
            batch_limit=2,
            description="no blockTimestamp, and batches over 2 calls refused (dRPC's free tier)",
        ),
        Profile(
            "liar-behind",
            liar="behind",
            liar_lag=40,
            description="true head, but eth_getLogs from a backend 40 behind: [] past it, HTTP 200",
        ),
        Profile(
            "liar-behind-split",
            liar="behind",
            liar_behind_mode="partial",
            liar_split_batches=True,
            description="eth_getLogs 40 behind, cut silently; batched headers from the true head",
        ),
        Profile(
            "liar-drops",
            liar="drops",
            liar_rate=0.2,
            seed=7,
            description="20% of eth_getLogs answers miss one log (its block keeps others)",
        ),
        Profile(
            "liar-blanks",
            liar="blanks",
            liar_rate=0.2,
            seed=11,
            description="20% of eth_getLogs answers leave out every log of one block, no error",
        ),
        Profile(
            "liar-orphans",
            liar="orphans",
            liar_rate=0.2,
            seed=8,
            description="20% of eth_getLogs answers: one block's logs carry an orphaned blockHash",
        ),
        Profile(
            "liar-truncates",
            liar="truncates",
            liar_rate=0.2,
            seed=9,
            description="20% of eth_getLogs answers cut to their first half of blocks, no error",
        ),
        Profile(
            "liar-fabricates",
            liar="fabricates",
            liar_rate=0.2,
            seed=10,
            description="20% of eth_getLogs answers gain a log that does not exist (fake topic0)",
        ),
    )
}
