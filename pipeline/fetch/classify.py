"""Every RPC failure classified once: from the HTTP status, headers, raw body and JSON-RPC
code, message and data, into an ErrorKind with any range hint, width limit and retry delay."""

from __future__ import annotations

import contextlib
import email.utils
import html
import math
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import requests
import urllib3

from pipeline.config.endpoints import redact_url
from pipeline.errors import ErrorKind, RpcError

# Message rules, first match wins, because codes are ambiguous across providers (-32005 is a
# result cap on one, a rate limit on another and a range cap on a third). The order matters where
# wordings overlap: result caps and head errors often mention a "block range" only as advice, a
# timeout may say "reduce your block range", and "daily ... rate limited" is a quota, not a pause.
_N = r"\d[\d,.]*k?"  # a count as providers write it: 10000, 10,000, 10.000, 10K
_MESSAGE_RULES: tuple[tuple[re.Pattern[str], ErrorKind], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind)
    for kind, pattern in (
        (
            ErrorKind.TOO_MANY_RESULTS,
            rf"more than {_N} (results|logs)|too many (results|logs)|max(imum)? (results|logs)"
            rf"|logs? matched by query|log response size|cap of {_N} logs|(results|logs) limit",
        ),
        (
            ErrorKind.RESPONSE_TOO_BIG,
            r"response (size|is too|too|exceed)|\d+ bytes|(too big|too large) response",
        ),
        (
            # Only long address or topic lists make our request itself too big.
            ErrorKind.TOO_MANY_FILTERS,
            r"too many (addresses|topics|filters)|max(imum)? (of \d+ )?(addresses|topics)"
            r"|less number of addresses|per search position|entity too large|payload too large",
        ),
        (
            ErrorKind.BEYOND_HEAD,
            r"beyond (the )?(current )?head|future block|unknown block|not (yet )?synced"
            r"|(block|header)\b[^.,;]{0,40}\bnot found|\b\d+ could not be found",
        ),
        (
            ErrorKind.PRUNED,
            r"pruned|missing trie node|histor(y|ical)\b.{0,20}(unavailable|not available|expired)"
            r"|older than \d+ blocks|\b(data|receipts|logs|blocks?) before .{0,40}not available",
        ),
        (
            # Our requests are never reversed, so a node calling the range invalid is a bug to
            # report, not a size limit to split around.
            ErrorKind.PERMANENT,
            r"invalid block range|unsupported method"
            r"|method\b.{0,40}(not found|does not exist|not (supported|available|allowed|enabled))",
        ),
        (ErrorKind.TIMEOUT, r"time[ -]?out|timed out|deadline exceeded|took too long"),
        (
            ErrorKind.RANGE_TOO_LARGE,
            r"block[ -]?range|blocks? distance|too many blocks"
            r"|\branges?\b.{0,40}?\b(too|limit|max|maximum|exceed\w*|allowed|over|bigger|larger"
            r"|wider|greater)\b"
            r"|\b(limit(ed)?|max(imum)?|more than|up to|at most|over)\b.{0,40}?\b(blocks?|range)\b",
        ),
        (ErrorKind.QUOTA, r"\b(daily|monthly|per (day|month))\b"),
        (
            ErrorKind.RATE_LIMITED,
            r"rate[ -]?limit|request (rate|limit)|\brate exceeded|too many requests?\b|throttl"
            r"|per second|\d\s*/\s*s(ec(ond)?)?\b|\br/s\b|\brps\b|throughput|retry in \d",
        ),
        (
            ErrorKind.QUOTA,
            r"quota|capacity|billing|\bcredits?\b|compute units|upgrade (your|to|plan)|\bplan\b"
            r"|payment required|usage limit",
        ),
        (
            ErrorKind.UNAUTHORIZED,
            r"unauthori[sz]ed|forbidden|authenticat|\bauth\b|api[ _-]?key|project id"
            r"|invalid (project|app|access|token)|access denied|not (allowed|authorized)"
            r"|whitelist|allowlist",
        ),
        # A bare "limit exceeded" (BSC, erigon and others on eth_getLogs) is a result cap; the
        # rate and quota wordings above have already claimed their own "limit exceeded".
        (ErrorKind.TOO_MANY_RESULTS, r"limit exceeded"),
        (
            ErrorKind.SERVER,
            r"upstream|no (healthy )?backend|bad gateway|service (temporarily )?unavailable"
            r"|internal (server )?error|overloaded",
        ),
    )
)

# Codes that mean one thing wherever they come from; they outrank the HTTP status.
_CODE_RULES: Mapping[int, ErrorKind] = {
    -32700: ErrorKind.MALFORMED,  # the endpoint could not parse our request: its fault, not ours
    -32601: ErrorKind.PERMANENT,  # method not found
    -32004: ErrorKind.PERMANENT,  # method not supported (EIP-1474)
    -32005: ErrorKind.RATE_LIMITED,  # "limit exceeded" (EIP-1474); a bare one is most often a rate
    429: ErrorKind.RATE_LIMITED,
    4444: ErrorKind.PRUNED,  # EIP-4444 history expiry
}
# Generic codes many providers use for anything; a specific HTTP status tells more.
_WEAK_CODE_RULES: Mapping[int, ErrorKind] = {
    -32600: ErrorKind.PERMANENT,  # invalid request
    -32602: ErrorKind.PERMANENT,  # invalid params
}
_STATUS_RULES: Mapping[int, ErrorKind] = {
    401: ErrorKind.UNAUTHORIZED,
    402: ErrorKind.QUOTA,
    403: ErrorKind.UNAUTHORIZED,
    408: ErrorKind.TIMEOUT,
    413: ErrorKind.RESPONSE_TOO_BIG,
    429: ErrorKind.RATE_LIMITED,
    504: ErrorKind.TIMEOUT,
    524: ErrorKind.TIMEOUT,  # Cloudflare: the origin did not answer in time
}
MOVED_STATUSES = frozenset({301, 302, 303})  # requests would follow them with a GET
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_SPLIT_KINDS = (ErrorKind.RANGE_TOO_LARGE, ErrorKind.TOO_MANY_RESULTS, ErrorKind.RESPONSE_TOO_BIG)

_BLOCK = r"0x[0-9a-fA-F]+|\d+"
_HINT_PATTERNS = (
    re.compile(rf"\[\s*({_BLOCK})\s*,\s*({_BLOCK})\s*\]"),  # "this block range should work: [a, b]"
    re.compile(rf"\brange:?\s+({_BLOCK})\s*(?:-|\.\.|to)\s*({_BLOCK})\b", re.IGNORECASE),
)
# A decimal count (not part of a hex number or a word): 500, 10,000, 10.000, 2K.
_COUNT = re.compile(r"(?<![\w.,])(\d{1,3}(?:[,.]\d{3})+|\d+)(\s?[kK])?(?!\w)")
# Words that put a limit right before a count: "max 5000", "limited to a 10,000", "(50000 > 10000)".
_LIMIT_WORDS = re.compile(
    r"\b(max(imum)?|limit(ed)?|up to|at most|over|allowed|more than|greater than|less than"
    r"|smaller than|exceeds?|distance|narrow your filter|set to)\b|>",
    re.IGNORECASE,
)
_BLOCK_UNIT = re.compile(r"\s*-?\s*(blocks?\b|range\b|block range\b)", re.IGNORECASE)
_RETRY_IN = re.compile(
    r"\b(?:retry|try again|wait|back ?off)\s+(?:in\s+|after\s+|for\s+)?(\d+(?:\.\d+)?)\s*"
    r"(ms|milliseconds?|s|secs?|seconds?|m|mins?|minutes?)\b",
    re.IGNORECASE,
)
_RETRY_KEYS = ("backoff_seconds", "retry_after", "retryAfter", "retry_after_seconds")


def classify_rpc_error(
    error: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> RpcError:
    """Classify a JSON-RPC error object or string: by message (then its `data`), by code, by
    HTTP status; also pull out a suggested range, a stated width limit and a retry delay."""
    if isinstance(error, str):
        error = {"message": error}
    if not isinstance(error, dict):
        return RpcError(ErrorKind.MALFORMED, f"error object is not an object: {str(error)[:200]}")
    code = _as_int(error.get("code"))
    message = _one_line(error.get("message"))[:2000]
    data = error.get("data")
    detail = _data_text(data)[:2000]
    kind = _kind_from_message(message) or _kind_from_message(detail)
    if kind is None and _data_hint(data) is not None:
        kind = ErrorKind.TOO_MANY_RESULTS  # Infura's structured "try this range" without words
    kind = kind or _CODE_RULES.get(code) or _kind_from_status(status)
    kind = kind or _WEAK_CODE_RULES.get(code, ErrorKind.SERVER)
    # Hardhat repeats the message as data.message: said once.
    shown = f"{message[:300]} ({detail[:200]})" if detail not in ("", message) else message[:300]
    shown = f"code {code}: {shown}" if code is not None else shown
    return _error(kind, shown or "(no message)", f"{message} {detail}", headers, data)


def decode_response(status: int, headers: Mapping[str, str], body: bytes) -> Any:
    """Return the JSON-RPC `result` of an HTTP response, or raise the classified RpcError."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], dict):
        payload = payload[0]  # some gateways answer a single request as a batch of one
    ok = 200 <= status < 300
    if isinstance(payload, dict):
        # The body is read even on error statuses: a 413 may carry a precise range limit.
        if payload.get("error") is not None:
            raise classify_rpc_error(payload["error"], status, headers)
        if ok and "result" in payload:
            return payload["result"]
    if ok:
        raise RpcError(ErrorKind.MALFORMED, f"not a JSON-RPC response: {_snippet(body)}")
    if status in MOVED_STATUSES:
        # Redirects that turn a POST into a GET are not followed (rpc.RpcClient): say where to.
        where = redact_url(headers.get("Location") or "") or "(no Location)"
        raise RpcError(ErrorKind.MOVED, f"HTTP {status}: the URL redirects to {where}: use that")
    text = _body_text(body)
    kind = _kind_from_message(text) or _kind_from_status(status) or ErrorKind.SERVER
    raise _error(kind, f"HTTP {status}: {text[:200] or '(empty body)'}", text, headers, None)


def classify_exception(exc: BaseException) -> RpcError:
    """Classify a transport exception; the message never contains the URL (it may hold a key)."""
    if isinstance(exc, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError):
        return RpcError(ErrorKind.TIMEOUT, "request timed out")
    return RpcError(ErrorKind.CONNECTION, _connection_reason(str(exc)) or type(exc).__name__)


def malformed_answer(exc: Exception, what: str) -> RpcError:
    """The failure an exception raised while reading, parsing, converting or validating an
    answer amounts to: a malformed response of that endpoint to that request (retried anywhere)."""
    if isinstance(exc, RpcError):
        return exc
    detail = _one_line(str(exc)[:400])[:200]
    reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return RpcError(ErrorKind.MALFORMED, f"{what} could not be read ({reason})")


@contextlib.contextmanager
def reading_answer(what: str) -> Iterator[None]:
    """Around code that reads an answer: an RpcError passes as it is, any other Exception becomes
    malformed_answer(). BaseException (Ctrl-C, exits) is never caught."""
    try:
        yield
    except RpcError:
        raise
    except Exception as exc:
        # A hostile answer (a quantity past 64 bits, nesting past any parser's depth, a number
        # where a string belongs) must fail that request, never the worker that read it.
        raise malformed_answer(exc, what) from None


def _error(
    kind: ErrorKind, message: str, text: str, headers: Mapping[str, str] | None, data: Any
) -> RpcError:
    """Build the RpcError with what `text` (and the JSON-RPC `data`) say besides the kind."""
    retry_after = _header_retry_after(headers)
    if retry_after is None:
        retry_after = _data_retry_after(data)
    if retry_after is None and (match := _RETRY_IN.search(text)):
        retry_after = _seconds(float(match[1]), match[2])
    hint = max_blocks = None
    if kind in _SPLIT_KINDS:
        hint = _data_hint(data) or _text_hint(text)
        max_blocks = _max_blocks(text, loose=kind is ErrorKind.RANGE_TOO_LARGE)
    return RpcError(kind, message, retry_after, hint, max_blocks)


def _kind_from_message(message: str) -> ErrorKind | None:
    # A URL quoted in an error page says where, not what: its "?apikey=" must not make a 500
    # an auth failure that retires the endpoint.
    text = _URL.sub(" ", message)
    for pattern, kind in _MESSAGE_RULES:
        if pattern.search(text):
            return kind
    return None


def _kind_from_status(status: int) -> ErrorKind | None:
    if status in _STATUS_RULES:
        return _STATUS_RULES[status]
    if status >= 500:
        return ErrorKind.SERVER
    if status >= 400:
        return ErrorKind.PERMANENT
    return None


def _data_hint(data: Any) -> tuple[int, int] | None:
    """Infura's `data: {"from": "0x..", "to": "0x.."}` suggestion."""
    if isinstance(data, dict):
        lo, hi = _as_int(data.get("from")), _as_int(data.get("to"))
        if lo is not None and hi is not None:
            return lo, hi
    return None


def _text_hint(text: str) -> tuple[int, int] | None:
    for pattern in _HINT_PATTERNS:
        if match := pattern.search(text):
            low, high = _block_number(match[1]), _block_number(match[2])
            return (low, high) if low is not None and high is not None else None
    return None


def _block_number(text: str) -> int | None:
    """A block number as a message writes it: 0x hex, or decimal (leading zeros too)."""
    try:
        return int(text, 16) if text[:2] == "0x" else int(text, 10)
    except ValueError:  # past the digits int() reads: no block number at all
        return None


def _max_blocks(text: str, loose: bool) -> int | None:
    """The smallest count a limit word puts a bound on. The limit is never above the width that
    was refused, so the minimum skips echoed widths ("block range = 5120, max ... = 5000").
    Unless `loose`, the count must be followed by a block unit, so "10K logs" is no width."""
    for pattern in _HINT_PATTERNS:
        text = pattern.sub(" ", text)  # a suggested range holds block numbers, not a width
    counts: list[int] = []
    previous_end = 0
    for match in _COUNT.finditer(text):
        before = text[max(previous_end, match.start() - 40) : match.start()]
        previous_end = match.end()
        if not _LIMIT_WORDS.search(before):
            continue
        if not loose and not _BLOCK_UNIT.match(text, match.end()):
            continue
        digits = re.sub(r"[,.]", "", match[1])
        if len(digits) > 18:
            continue  # no width limit has this many digits (and int() would refuse thousands)
        count = int(digits) * (1000 if match[2] else 1)
        if count > 0:
            counts.append(count)
    return min(counts, default=None)


def _header_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Retry-After in seconds (or an HTTP date, counted from now); header names in any case."""
    if not headers:
        return None
    value = headers.get("Retry-After")
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    seconds = _as_float(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # unreadable: the caller falls back to its own backoff
    return max(0.0, when.timestamp() - time.time())


def _data_retry_after(data: Any) -> float | None:
    """Infura's `data.rate.backoff_seconds` (or the same key flat) and similar forms."""
    if not isinstance(data, dict):
        return None
    for where in (data.get("rate"), data):
        if isinstance(where, dict):
            for key in _RETRY_KEYS:
                seconds = _as_float(where.get(key))
                if seconds is not None:
                    return seconds
    return None


def _seconds(value: float, unit: str) -> float:
    unit = unit.lower()
    if unit.startswith("ms") or unit.startswith("milli"):
        return value / 1000
    return value * 60 if unit.startswith("m") else value


def _as_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _as_int(value: Any) -> int | None:
    """An int, or a decimal or 0x-hex string of one (codes and block numbers come as both)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            return None
    return None


def _data_text(data: Any) -> str:
    """The readable part of `error.data`: a string, or the strings of an object (not links)."""
    if isinstance(data, str):
        return _one_line(data)
    if isinstance(data, dict):
        parts = [v for v in data.values() if isinstance(v, str) and "://" not in v]
        return _one_line(" ".join(parts))
    return ""


def _one_line(value: Any) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _body_text(body: bytes) -> str:
    """The visible text of a non-JSON-RPC body (HTML error pages included), on one line."""
    text = body[:4096].decode("utf-8", "replace")
    text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", text)
    return _one_line(html.unescape(re.sub(r"<[^>]*>", " ", text)))


def _snippet(body: bytes) -> str:
    return _body_text(body[:200]) or "(empty body)"


def _connection_reason(text: str) -> str | None:
    for pattern, reason in (
        (r"refused", "connection refused"),
        (r"RemoteDisconnected|aborted|reset by peer|closed connection", "connection dropped"),
        (r"Name or service not known|nodename nor servname|getaddrinfo", "host name not found"),
        (r"certificate|SSL", "TLS error"),
    ):
        if re.search(pattern, text):
            return reason
    return None
