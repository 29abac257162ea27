"""Run configuration: command-line values, then environment, then defaults, validated once."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.config.endpoints import Endpoint, parse_endpoints
from pipeline.config.options import (
    BY_NAME,
    DEFAULT_AUDIT_RATE,
    DEFAULT_FILE_BLOCKS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_OUTPUT,
    DEFAULT_STALL_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    Engine,
    checked,
)
from pipeline.decode.signature import (
    EventSpec,
    parse_abi,
    parse_signature,
    require_address_for_anonymous,
)
from pipeline.errors import ConfigError
from pipeline.hashing import is_checksum_address

# The other DEFAULT_* values are defined with their options (pipeline.config.options) and
# imported above, so `from pipeline.config.settings import DEFAULT_...` keeps working.
DEFAULT_RPC_URLS = (
    "https://ethereum-sepolia-rpc.publicnode.com",
    "https://rpc.ankr.com/eth_sepolia",
    "https://sepolia.drpc.org",
)
BLOCK_TAGS = ("latest", "safe", "finalized")

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_TOPIC = re.compile(r"^0x[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class LogFilter:
    """Which logs to fetch: addresses ORed, and per topic position a list of values ORed."""

    addresses: tuple[str, ...] = ()
    topics: tuple[tuple[str, ...], ...] = ((), (), (), ())

    def rpc_params(self, start: int, end: int) -> dict:
        """The eth_getLogs filter object for blocks start..end inclusive."""
        params: dict = {"fromBlock": hex(start), "toBlock": hex(end)}
        if self.addresses:
            params["address"] = list(self.addresses)
        topics = list(self.topics)
        while topics and not topics[-1]:
            topics.pop()  # trailing wildcards are implied; some providers reject explicit nulls
        if topics:
            params["topics"] = [list(values) if values else None for values in topics]
        return params

    @property
    def takes_all(self) -> bool:
        """True when every log passes: an answer then holds each of its blocks' logs whole."""
        return not self.addresses and not any(self.topics)

    def matches(self, log: dict) -> bool:
        """Whether one decoded log passes the filter (for logs read from block receipts)."""
        if self.addresses and str(log.get("address", "")).lower() not in self.addresses:
            return False
        topics = [str(t).lower() for t in log.get("topics") or ()]
        for position, values in enumerate(self.topics):
            if values and (position >= len(topics) or topics[position] not in values):
                return False
        return True


@dataclass(frozen=True)
class BackfillConfig:
    """Everything one backfill run needs, already validated."""

    endpoints: tuple[Endpoint, ...]
    from_block: int
    # A block number, one of BLOCK_TAGS, or None for the reorg-safe default (finalized, else the
    # head minus the chain's confirmation depth); resolved against the endpoints.
    to_block: int | str | None
    log_filter: LogFilter = field(default_factory=LogFilter)
    confirmations: int = 0  # with to_block "latest": stop this many blocks below the head
    chunk_size: int | None = None  # None: adaptive, sized to the logs per block seen
    output: Path | str = DEFAULT_OUTPUT  # a folder, or an object-storage URI (store.uri)
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    hex_output: bool = False
    timeout: float = DEFAULT_TIMEOUT_S
    stall_timeout: float = DEFAULT_STALL_TIMEOUT_S
    overwrite: bool = False
    file_blocks: int = DEFAULT_FILE_BLOCKS  # final files never cross a multiple of this
    events: tuple[EventSpec, ...] = ()  # decoded into OUT/events/<folder>/ besides the raw logs
    engine: str = Engine.MULTIPROCESSING  # one of Engine: see pipeline.run.engine
    ray_address: str | None = None  # with the ray engine: None starts a local instance
    staging: Path | None = None  # object storage only: the local staging folder
    audit_rate: float = DEFAULT_AUDIT_RATE  # see pipeline.verify.trust
    verify: bool = True  # check every answer before it is stored (pipeline.verify)
    all_hashes: bool = False  # with --rps: the checks wait for their share, never sample


def build_config(
    *,
    rpc: Sequence[str] = (),
    from_block: str | int = 0,
    to_block: str | int | None = None,
    confirmations: int | None = None,
    addresses: Sequence[str] = (),
    topics: Sequence[Sequence[str]] = ((), (), (), ()),
    env: Mapping[str, str] | None = None,
    rps: float | None = None,
    concurrency: int | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    endpoint_settings: Mapping[str, Mapping[str, Any]] | None = None,
    events: Sequence[str] = (),
    abis: Sequence[str | Path] = (),
    **options,
) -> BackfillConfig:
    """Validate raw values; `--rpc`, `--address` and `--topic0` fall back to RPC_URLS,
    CONTRACT_ADDRESS and EVENT_TOPIC in `env`, then to the defaults. `endpoint_settings`
    (from a config file) names endpoints with their URL and/or their own limits."""
    env = env or {}
    settings = dict(endpoint_settings or {})
    configured = [f"{name}={s['url']}" for name, s in settings.items() if "url" in s]
    rpc_specs = list(rpc) or configured or _split_env(env.get("RPC_URLS")) or list(DEFAULT_RPC_URLS)
    addresses = list(addresses) or _split_env(env.get("CONTRACT_ADDRESS"))
    topic_lists = [list(t) for t in topics] + [[] for _ in range(4 - len(topics))]
    specs = parse_events(events, abis)
    require_address_for_anonymous(specs, bool(addresses))
    # An explicit --topic0 wins; events beat $EVENT_TOPIC, which a shell may have left set.
    topic_lists[0] = topic_lists[0] or _selectors(specs) or _split_env(env.get("EVENT_TOPIC"))
    start = parse_block_number(from_block, "--from-block")
    end, depth = (None, 0) if to_block is None else parse_block_spec(to_block)
    if isinstance(end, int) and start > end:
        raise ConfigError(f"--from-block {start} is after --to-block {end}: swap them")
    if confirmations is not None:
        if isinstance(confirmations, bool) or not isinstance(confirmations, int):
            raise ConfigError(f"--confirmations must be a whole number, got {confirmations!r}")
        if confirmations < 0:
            raise ConfigError(f"--confirmations must not be negative, got {confirmations}")
        if end not in (None, "latest") or depth:
            raise ConfigError(
                "--confirmations counts back from the head: use it without --to-block, or with "
                "--to-block latest (or write --to-block latest-N)"
            )
        end, depth = "latest", confirmations
    options = checked(options)  # each option's own bounds and type, from the registry
    if options.get("staging") is not None and not isinstance(options.get("output"), str):
        raise ConfigError("--staging is for an object-storage --output (s3://…): drop it")
    if len(topics) > 4:
        raise ConfigError("at most four topic positions (--topic0 .. --topic3)")
    endpoints = parse_endpoints(rpc_specs)
    unmatched = sorted(set(settings) - {e.name for e in endpoints})
    if unmatched and "url" not in settings[unmatched[0]]:
        names = ", ".join(e.name for e in endpoints)
        raise ConfigError(
            f"the config file sets limits for endpoint {unmatched[0]!r}, but no endpoint has "
            f"that name (endpoints: {names}); name it with --rpc {unmatched[0]}=URL"
        )
    return BackfillConfig(
        endpoints=tuple(
            _with_limits(e, settings.get(e.name, {}), rps, (concurrency, max_concurrency))
            for e in endpoints
        ),
        from_block=start,
        to_block=end,
        confirmations=depth,
        log_filter=LogFilter(
            addresses=tuple(dict.fromkeys(parse_address(a) for a in addresses)),
            topics=tuple(
                tuple(dict.fromkeys(parse_topic(t, f"--topic{i}") for t in values))
                for i, values in enumerate(topic_lists)
            ),
        ),
        events=tuple(specs),
        **options,
    )


def parse_events(signatures: Sequence[str], abis: Sequence[str | Path]) -> list[EventSpec]:
    """The events of --event signatures and --abi files, each once, in the order given."""
    specs = [parse_signature(text) for text in signatures]
    specs += [spec for path in abis for spec in parse_abi(path)]
    return list(dict.fromkeys(specs))


def _selectors(specs: Sequence[EventSpec]) -> list[str]:
    """The topic0 filter the events imply: none when one of them is anonymous (it has none)."""
    if not specs or any(spec.anonymous for spec in specs):
        return []
    return list(dict.fromkeys(spec.topic0 for spec in specs))


def _with_limits(
    endpoint: Endpoint,
    settings: Mapping[str, Any],
    rps: float | None,
    concurrency: tuple[int | None, int],
) -> Endpoint:
    where = f"endpoint {endpoint.name}"
    # The run-wide --rps, --concurrency and --max-concurrency, unless the file sets this
    # endpoint's own; checked against the same bounds either way.
    rps = BY_NAME["rps"].check(settings.get("rps", rps), where)
    pinned, ceiling = concurrency
    pinned = BY_NAME["concurrency"].check(settings.get("concurrency", pinned), where)
    ceiling = BY_NAME["max_concurrency"].check(settings.get("max_concurrency", ceiling), where)
    max_blocks = settings.get("max_block_range")
    if max_blocks is not None and not _number(max_blocks, f"max-block-range ({where})") >= 1:
        raise ConfigError(f"max-block-range must be at least 1 ({where}), got {max_blocks}")
    return replace(
        endpoint,
        rps=rps,
        concurrency=pinned,
        max_concurrency=ceiling,
        max_blocks=None if max_blocks is None else int(max_blocks),
    )


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    return value


def _split_env(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def parse_block_number(value: str | int, flag: str) -> int:
    """A non-negative block number, decimal or 0x-hex."""
    text = str(value).strip().replace("_", "")
    try:
        number = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise ConfigError(f"{flag} must be a block number, got {str(value)!r}") from None
    if number < 0:
        raise ConfigError(f"{flag} must not be negative, got {number}")
    return number


def parse_block_spec(value: str | int) -> tuple[int | str, int]:
    """(a block number or one of latest, safe, finalized; confirmations below it): `latest-N`
    means N blocks below the head."""
    text = str(value).strip().lower().replace(" ", "")
    if text in BLOCK_TAGS:
        return text, 0
    if behind := re.fullmatch(r"latest-([0-9_]+)", text):
        return "latest", int(behind[1].replace("_", ""))
    if not re.fullmatch(r"-?(0x[0-9a-f]+|[0-9_]+)", text):
        raise ConfigError(
            f"--to-block must be a block number, latest-N, or one of {', '.join(BLOCK_TAGS)}, "
            f"got {value!r}"
        )
    return parse_block_number(text, "--to-block"), 0


def parse_address(value: str) -> str:
    """A 20-byte 0x address, lower-cased; a mixed-case one must carry a valid checksum."""
    text = value.strip()
    if not _ADDRESS.match(text):
        raise ConfigError(f"--address must be 0x followed by 40 hex digits, got {value!r}")
    if (
        text[2:] != text[2:].lower()
        and text[2:] != text[2:].upper()
        and not is_checksum_address(text)
    ):
        raise ConfigError(f"--address {value} has a wrong checksum: check it for typos")
    return text.lower()


def parse_topic(value: str, flag: str) -> str:
    """A 32-byte 0x topic, lower-cased."""
    text = value.strip()
    if not _TOPIC.match(text):
        raise ConfigError(f"{flag} must be 0x followed by 64 hex digits, got {value!r}")
    return text.lower()
