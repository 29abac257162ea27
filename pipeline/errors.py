"""Every failure the tool can meet, classified once: bad input, and RPC faults by kind."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

import orjson
import requests


class ConfigError(ValueError):
    """Bad usage or input; the message is one line that says what to fix (exit code 2)."""


class ErrorKind(str, enum.Enum):
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


class RpcError(Exception):
    """A classified failure of one request to one endpoint."""

    def __init__(self, kind: ErrorKind, message: str, retry_after: float | None = None) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"


# Messages are matched first because codes are ambiguous across providers (-32005 is a result cap
# on one, a rate limit on another and a range cap on a third).
_MESSAGE_RULES: tuple[tuple[re.Pattern[str], ErrorKind], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind)
    for pattern, kind in (
        (
            r"more than \d+ results|max results|too many (results|logs)|result.*(limit|cap)",
            ErrorKind.TOO_MANY_RESULTS,
        ),
        (r"response size|response too (big|large)|size exceeded", ErrorKind.RESPONSE_TOO_BIG),
        (
            r"beyond (the )?current head|beyond head|future block|block.*not (yet )?(available|found)",  # noqa: E501
            ErrorKind.BEYOND_HEAD,
        ),
        (
            r"block range|range (is )?too (wide|large|big)|limited to .*range|ranges? over|max.*range",  # noqa: E501
            ErrorKind.RANGE_TOO_LARGE,
        ),
        (r"too many (addresses|topics)|address.*limit", ErrorKind.TOO_MANY_FILTERS),
        (r"rate|too many requests|throttl|backoff", ErrorKind.RATE_LIMITED),
        (r"capacity|quota|billing|credits|exhausted|upgrade your plan", ErrorKind.QUOTA),
        (
            r"unauthori[sz]ed|forbidden|api key|invalid key|not allowed|access denied",
            ErrorKind.UNAUTHORIZED,
        ),
        (r"pruned|history.*unavailable|missing trie node", ErrorKind.PRUNED),
        (r"timeout|timed out", ErrorKind.TIMEOUT),
    )
)
_CODE_RULES: Mapping[int, ErrorKind] = {
    -32700: ErrorKind.MALFORMED,  # the endpoint could not parse our request: its fault, not ours
    -32601: ErrorKind.PERMANENT,
    -32602: ErrorKind.PERMANENT,
    -32005: ErrorKind.RATE_LIMITED,
    429: ErrorKind.RATE_LIMITED,
    4444: ErrorKind.PRUNED,
}
_STATUS_RULES: Mapping[int, ErrorKind] = {
    401: ErrorKind.UNAUTHORIZED,
    402: ErrorKind.QUOTA,
    403: ErrorKind.UNAUTHORIZED,
    408: ErrorKind.TIMEOUT,
    413: ErrorKind.RESPONSE_TOO_BIG,
    429: ErrorKind.RATE_LIMITED,
    504: ErrorKind.TIMEOUT,
}


def classify_rpc_error(
    error: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> RpcError:
    """Classify a JSON-RPC error object (message, then code, then HTTP status)."""
    if not isinstance(error, dict):
        return RpcError(ErrorKind.MALFORMED, f"error object is not an object: {str(error)[:200]}")
    message = str(error.get("message", ""))[:300]
    code = error.get("code")
    kind = _kind_from_message(message)
    if kind is None and isinstance(code, int):
        kind = _CODE_RULES.get(code)
    if kind is None:
        kind = _kind_from_status(status) or ErrorKind.SERVER
    text = f"code {code}: {message}" if code is not None else message
    return RpcError(
        kind, text, _retry_after(headers, error) if kind is ErrorKind.RATE_LIMITED else None
    )


def _kind_from_message(message: str) -> ErrorKind | None:
    for pattern, kind in _MESSAGE_RULES:
        if pattern.search(message):
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


def _retry_after(headers: Mapping[str, str] | None, error: dict | None = None) -> float | None:
    value: Any = (headers or {}).get("Retry-After")
    if value is None and error and isinstance(error.get("data"), dict):
        rate = error["data"].get("rate")
        value = rate.get("backoff_seconds") if isinstance(rate, dict) else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None  # an HTTP-date Retry-After: fall back to our own backoff


def decode_response(status: int, headers: Mapping[str, str], body: bytes) -> Any:
    """Return the JSON-RPC `result` of an HTTP response, or raise the classified RpcError."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict) and payload.get("error") is not None:
        raise classify_rpc_error(payload["error"], status, headers)
    if status != 200:
        kind = _kind_from_message(_snippet(body)) if status >= 400 else None
        kind = kind or _kind_from_status(status) or ErrorKind.SERVER
        retry_after = _retry_after(headers) if kind is ErrorKind.RATE_LIMITED else None
        raise RpcError(kind, f"HTTP {status}: {_snippet(body)}", retry_after)
    if not isinstance(payload, dict) or "result" not in payload:
        raise RpcError(ErrorKind.MALFORMED, f"not a JSON-RPC response: {_snippet(body)}")
    return payload["result"]


def _snippet(body: bytes) -> str:
    text = body[:200].decode("utf-8", "replace")
    return " ".join(re.sub(r"<[^>]*>", " ", text).split()) or "(empty body)"


def classify_exception(exc: BaseException) -> RpcError:
    """Classify a transport exception; the message never contains the URL (it may hold a key)."""
    if isinstance(exc, requests.Timeout):
        return RpcError(ErrorKind.TIMEOUT, "request timed out")
    if isinstance(exc, requests.ConnectionError):
        return RpcError(ErrorKind.CONNECTION, _connection_reason(str(exc)))
    return RpcError(ErrorKind.CONNECTION, type(exc).__name__)


def _connection_reason(text: str) -> str:
    for pattern, reason in (
        (r"refused", "connection refused"),
        (r"RemoteDisconnected|aborted|reset by peer|closed connection", "connection dropped"),
        (r"Name or service not known|nodename nor servname|getaddrinfo", "host name not found"),
        (r"certificate|SSL", "TLS error"),
    ):
        if re.search(pattern, text):
            return reason
    return "connection failed"
