"""RPC endpoints: parsing, short display names and secret-free URLs."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.config.options import DEFAULT_MAX_CONCURRENCY
from pipeline.errors import ConfigError

# A path segment this long, or mixing letters and digits past this length, is treated as an API
# key: providers put keys in paths (/v3/KEY, /v2/KEY, /eth_sepolia/KEY) and we cannot tell for sure.
_SECRET_MIN_LEN = 16
_MIXED_SECRET_MIN_LEN = 8
_HOSTNAME = re.compile(r"^[A-Za-z0-9_.-]+$|^[0-9A-Fa-f:.]+$")  # DNS name, IPv4, or IPv6 literal
_NAMED_URL = re.compile(r"^(?P<name>[A-Za-z][\w.-]{0,31})=(?P<url>.+)$")


@dataclass(frozen=True)
class Endpoint:
    """One JSON-RPC endpoint: its display name, full URL (may hold secrets), redacted URL, and
    how hard we may use it."""

    name: str
    url: str
    safe_url: str
    rps: float | None = None  # requests per second at most (None: as fast as it answers)
    concurrency: int | None = None  # requests in flight at once, pinned; None: adaptive
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY  # the adaptive limit's ceiling

    @property
    def fingerprint(self) -> str:
        """This endpoint's id across runs, safe to store: 16 hex digits of its URL's SHA-256
        (the URL may hold a key; the digest does not give it away)."""
        return hashlib.sha256(self.url.encode()).hexdigest()[:16]

    @property
    def threads(self) -> int:
        """The worker threads this endpoint needs: one per request it may have in flight."""
        return self.concurrency or self.max_concurrency

    max_blocks: int | None = None  # a known eth_getLogs range cap (None: learn it)


def redact_url(url: str) -> str:
    """Return `url` with credentials, key-like path segments and query values replaced by ***."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if _port_or_none(parts) else "")
    if parts.username or parts.password:
        netloc = "***@" + netloc
    path = "/".join(_redact_segment(s) for s in parts.path.split("/"))
    query = (
        "&".join(_redact_query_item(item) for item in parts.query.split("&")) if parts.query else ""
    )
    prefix = f"{parts.scheme}://{netloc}" if parts.scheme or netloc else ""
    return prefix + path + (f"?{query}" if query else "")


def _port_or_none(parts) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


def _redact_segment(segment: str) -> str:
    has_digit = any(c.isdigit() for c in segment)
    has_alpha = any(c.isalpha() for c in segment)
    if len(segment) >= _SECRET_MIN_LEN or (
        len(segment) >= _MIXED_SECRET_MIN_LEN and has_digit and has_alpha
    ):
        return "***"
    return segment


def _redact_query_item(item: str) -> str:
    key, sep, _ = item.partition("=")
    return f"{key}=***" if sep else "***"


def scrub(text: str, url: str) -> str:
    """Remove every secret-bearing part of `url` from free text such as an exception message."""
    parts = urlsplit(url)
    secrets = [url, parts.path + ("?" + parts.query if parts.query else ""), parts.query]
    secrets += [s for s in parts.path.split("/") if _redact_segment(s) == "***"]
    secrets += [parts.username or "", parts.password or ""]
    for secret in sorted({s for s in secrets if len(s) > 1}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def parse_endpoints(specs: list[str]) -> list[Endpoint]:
    """Validate `[NAME=]URL` strings and give each endpoint a distinct short name."""
    parsed: list[tuple[str | None, str]] = []
    for spec in specs:
        spec = spec.strip()
        named = _NAMED_URL.match(spec)
        name, url = (
            (named["name"], named["url"]) if named and "//" not in named["name"] else (None, spec)
        )
        _validate_url(url)
        parsed.append((name, url))
    names = _unique([name or short_name(url) for name, url in parsed])
    return [Endpoint(n, url, redact_url(url)) for n, (_, url) in zip(names, parsed, strict=False)]


def same_urls(endpoints: Sequence[Endpoint]) -> list[tuple[str, str]]:
    """Pairs of endpoint names given one URL (the first name with each later one)."""
    first: dict[str, str] = {}
    pairs = []
    for e in endpoints:
        if e.url in first:
            pairs.append((first[e.url], e.name))
        first.setdefault(e.url, e.name)
    return pairs


def _validate_url(url: str) -> None:
    host = urlsplit(f"http://{url}").hostname or ""
    if "://" not in url and _HOSTNAME.match(host):
        # A local node is served over http, a provider over https.
        scheme = "http" if host == "localhost" or _is_ip(host) else "https"
        shown = redact_url(f"{scheme}://{url}")  # (read without a scheme, host:port is mangled)
        typed = shown.split("://", 1)[1]
        raise ConfigError(f"invalid RPC URL {typed!r}: it needs its scheme, as in {shown}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not _HOSTNAME.match(parts.hostname or ""):
        raise ConfigError(
            f"invalid RPC URL {redact_url(url)!r}: expected http(s)://host[:port][/path]"
        )
    try:
        parts.port  # noqa: B018 - urlsplit validates the port lazily
    except ValueError:
        raise ConfigError(
            f"invalid RPC URL {redact_url(url)!r}: the port must be a number 0-65535"
        ) from None


def short_name(url: str) -> str:
    """Name an endpoint after its provider (`publicnode`, `ankr`); IP hosts keep the port."""
    parts = urlsplit(url)
    host = (parts.hostname or "rpc").lower()
    port = _port_or_none(parts)
    if host == "localhost" or _is_ip(host):
        return f"{host}:{port}" if port else host
    labels = [label for label in host.split(".") if label]
    name = labels[-2] if len(labels) >= 2 else labels[0]
    return f"{name}:{port}" if port and port not in (80, 443) else name


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out
