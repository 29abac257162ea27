"""Before any task runs: ask every endpoint which chain it serves and where its head is."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .config import BackfillConfig
from .endpoints import Endpoint
from .errors import ConfigError, ErrorKind, RpcError
from .rpc import RpcClient

PROBE_TIMEOUT_S = 10.0
PROBE_ATTEMPTS = 4  # one 429 or 502 at start must not end a run before it began
PROBE_RETRY_S = 0.5
FINAL = (ErrorKind.QUOTA, ErrorKind.UNAUTHORIZED)  # asking again will not change the answer


@dataclass(frozen=True)
class Probe:
    """What one endpoint answered at start; `error` is set when it did not answer."""

    endpoint: Endpoint
    chain_id: int | None = None
    end_block: int | None = None  # its block for the requested --to-block tag, or its head
    error: str = ""
    refused_tag: bool = False  # it answered, but knows no such --to-block tag


class NoEndpointError(RuntimeError):
    """No endpoint answered at all (exit code 1)."""


@dataclass(frozen=True)
class Plan:
    """The resolved run: chain, inclusive block range, and the endpoints that failed to answer."""

    chain_id: int
    from_block: int
    to_block: int
    silent: tuple[Probe, ...]
    heads: dict[str, int] = field(default_factory=dict)  # endpoint name -> its probed block
    behind: tuple[Probe, ...] = ()  # answered, but their head is before the end block


def probe(endpoint: Endpoint, tag: str, timeout: float) -> Probe:
    """Ask one endpoint for its chain id and `tag` block, retrying passing faults briefly."""
    for attempt in range(PROBE_ATTEMPTS):
        result, kind = _probe_once(endpoint, tag, timeout)
        if not result.error or result.refused_tag or kind in FINAL:
            break
        if attempt + 1 < PROBE_ATTEMPTS:
            time.sleep(PROBE_RETRY_S * 2**attempt)
    return result


def _probe_once(endpoint: Endpoint, tag: str, timeout: float) -> tuple[Probe, ErrorKind | None]:
    client = RpcClient(endpoint, min(timeout, PROBE_TIMEOUT_S))
    chain_id = None
    try:
        chain_id = client.chain_id()
        return Probe(endpoint, chain_id, client.block_number(tag)), None
    except RpcError as err:
        refused = chain_id is not None and err.kind is ErrorKind.PERMANENT
        return Probe(endpoint, chain_id, error=str(err), refused_tag=refused), err.kind
    finally:
        client.close()


def resolve_plan(config: BackfillConfig) -> Plan:
    """Probe all endpoints at once and pin down the chain and the block range to fetch."""
    tag = config.to_block if isinstance(config.to_block, str) else "latest"
    with ThreadPoolExecutor(max_workers=len(config.endpoints)) as pool:
        probes = list(pool.map(lambda e: probe(e, tag, config.timeout), config.endpoints))
    answered = [p for p in probes if not p.error]
    if not answered and any(p.refused_tag for p in probes):
        reasons = "; ".join(f"{p.endpoint.name}: {p.error}" for p in probes if p.refused_tag)
        raise ConfigError(
            f"--to-block {tag}: no endpoint could tell that block ({reasons}); "
            "use a block number or latest"
        )
    if not answered:
        reasons = "; ".join(f"{p.endpoint.name}: {p.error}" for p in probes)
        raise NoEndpointError(
            f"no endpoint answered ({reasons}); check the --rpc URLs and the network"
        )
    chains = {p.chain_id for p in answered}
    if len(chains) > 1:
        listing = ", ".join(f"{p.endpoint.name}={p.chain_id}" for p in answered)
        raise ConfigError(
            f"the endpoints serve different chains ({listing}): pass endpoints of one chain"
        )
    # The run ends at the most advanced endpoint's block. Endpoints behind it serve only what
    # they have: a node asked beyond its head may answer [] instead of an error, so workers
    # never ask beyond the head they know.
    leader = max(answered, key=lambda p: p.end_block)
    head = leader.end_block
    end = config.to_block if isinstance(config.to_block, int) else head
    if end > head:
        raise ConfigError(
            f"--to-block {end} is beyond block {head}, the head of {leader.endpoint.name} "
            "(the most advanced endpoint): lower it or use latest"
        )
    if config.from_block > end:
        raise ConfigError(f"--from-block {config.from_block} is after the end block {end}")
    return Plan(
        chains.pop(),
        config.from_block,
        end,
        tuple(p for p in probes if p.error),
        {p.endpoint.name: p.end_block for p in answered},
        tuple(p for p in answered if p.end_block < end),
    )
