"""Before any task runs: ask every endpoint which chain it serves and where its head is."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from pipeline.config.endpoints import Endpoint
from pipeline.config.settings import BackfillConfig
from pipeline.errors import ConfigError, ErrorKind, NoEndpointError, RpcError
from pipeline.fetch.rpc import RpcClient
from pipeline.plan.runplan import Plan, Probe

PROBE_TIMEOUT_S = 10.0
PROBE_ATTEMPTS = 4  # one 429 or 502 at start must not end a run before it began
PROBE_RETRY_S = 0.5
# Asking again will not change the answer.
FINAL = (ErrorKind.QUOTA, ErrorKind.UNAUTHORIZED, ErrorKind.MOVED)


# How far below the head a reorg can still reach, for chains whose nodes may not know a
# finalized block; used only when no endpoint answers the "finalized" tag.
REORG_DEPTH = {137: 256, 56: 20, 250: 10, 100: 20}
DEFAULT_REORG_DEPTH = 64  # two Ethereum epochs: beyond it a block is finalized


def probe(endpoint: Endpoint, tag: str, timeout: float) -> Probe:
    """Ask one endpoint for its chain id, head and `tag` block, retrying passing faults."""
    for attempt in range(PROBE_ATTEMPTS):
        result, kind = _probe_once(endpoint, tag, timeout)
        if not result.error or result.refused_tag or kind in FINAL:
            break
        if attempt + 1 < PROBE_ATTEMPTS:
            time.sleep(PROBE_RETRY_S * 2**attempt)
    return result


def _probe_once(endpoint: Endpoint, tag: str, timeout: float) -> tuple[Probe, ErrorKind | None]:
    # The questions go at once, each on a connection of its own: one round trip where asking
    # them in turn took two, or three with a tag (the default end asks for "finalized").
    questions: list[Callable[[RpcClient], int]] = [
        lambda client: client.chain_id(),
        lambda client: client.block_number(),
    ]
    if tag != "latest":
        questions.append(lambda client: client.block_number(tag))
    with ThreadPoolExecutor(max_workers=len(questions)) as pool:
        answers = list(pool.map(lambda ask: _ask(endpoint, timeout, ask), questions))
    errors = [a for a in answers if isinstance(a, RpcError)]
    chain_id, head, *tagged = (None if isinstance(a, RpcError) else a for a in answers)
    if not errors:
        return Probe(endpoint, chain_id, head, tag_block=tagged[0] if tagged else None), None
    # A hostile first answer fails this probe (it is retried), never the run. An endpoint that
    # told its chain and head is usable even when it knows no such tag.
    error, known = errors[0], chain_id is not None and head is not None
    refused = known and error.kind is ErrorKind.PERMANENT  # then it is the tag's error
    head = head if known else None
    return Probe(endpoint, chain_id, head, str(error), refused_tag=refused), error.kind


def _ask(endpoint: Endpoint, timeout: float, ask: Callable[[RpcClient], int]) -> int | RpcError:
    """One preflight question, on a client of its own: the answer, or the error it met."""
    client = RpcClient(endpoint, min(timeout, PROBE_TIMEOUT_S))
    try:
        with client.reading("the preflight probe"):
            return ask(client)
    except RpcError as err:
        return err
    finally:
        client.close()


def start_preflight(config: BackfillConfig) -> Future[Plan]:
    """resolve_plan(config) in the background: its round trips (a TLS handshake and a request
    to each endpoint) overlap whatever the caller does meanwhile, such as importing pyarrow."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="preflight")
    future = pool.submit(resolve_plan, config)
    pool.shutdown(wait=False)
    return future


def resolve_plan(config: BackfillConfig) -> Plan:
    """Probe all endpoints at once and pin down the chain and the block range to fetch."""
    tag = config.to_block if isinstance(config.to_block, str) else "latest"
    tag = "finalized" if config.to_block is None else tag
    with ThreadPoolExecutor(max_workers=len(config.endpoints)) as pool:
        probes = list(pool.map(lambda e: probe(e, tag, config.timeout), config.endpoints))
    answered = [p for p in probes if p.head is not None]
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
    chain_id = chains.pop()
    end, reason = _end_block(config, tag, answered, chain_id)
    if config.from_block > end:
        raise ConfigError(
            f"--from-block {config.from_block} is after the end block {end} ({reason})"
        )
    return Plan(
        chain_id,
        config.from_block,
        end,
        tuple(p for p in probes if p.error and not p.refused_tag),
        {p.endpoint.name: p.head for p in answered},
        tuple(p for p in answered if p.head < end),
        reason,
        _settled_block(tag, answered, chain_id),
    )


def _settled_block(tag: str, answered: list[Probe], chain_id: int) -> int:
    """The last block no reorg can reach: the finalized block where the endpoints were asked
    for it, else the head minus the chain's reorg depth (what the default end falls back to)."""
    finalized = [p.tag_block for p in answered if p.tag_block is not None]
    if tag == "finalized" and finalized:
        return max(finalized)
    return max(p.head for p in answered) - REORG_DEPTH.get(chain_id, DEFAULT_REORG_DEPTH)


def _end_block(
    config: BackfillConfig, tag: str, answered: list[Probe], chain_id: int
) -> tuple[int, str]:
    # The run ends at the most advanced endpoint's block. Endpoints behind it serve only what
    # they have: a node asked beyond its head may answer [] instead of an error, so workers
    # never ask beyond the head they know.
    leader = max(answered, key=lambda p: p.head)
    head = leader.head
    if isinstance(config.to_block, int):
        if config.to_block > head:
            raise ConfigError(
                f"--to-block {config.to_block} is beyond block {head}, the head of "
                f"{leader.endpoint.name} (the most advanced endpoint): lower it or use latest"
            )
        return config.to_block, "--to-block"
    if tag == "latest":
        below = f" minus {config.confirmations} confirmations" if config.confirmations else ""
        return head - config.confirmations, f"the latest block {head}{below}"
    tagged = [p.tag_block for p in answered if p.tag_block is not None]
    if tagged:
        default = " (the reorg-safe default)" if config.to_block is None else ""
        return max(tagged), f"the {tag} block{default}"
    reasons = "; ".join(f"{p.endpoint.name}: {p.error}" for p in answered if p.error)
    if config.to_block is not None:
        raise ConfigError(
            f"--to-block {tag}: no endpoint could tell that block ({reasons}); "
            "use a block number or latest-N"
        )
    depth = REORG_DEPTH.get(chain_id, DEFAULT_REORG_DEPTH)
    return head - depth, (
        f"the latest block {head} minus {depth} confirmations (the reorg-safe default; "
        "no endpoint knows a finalized block)"
    )
