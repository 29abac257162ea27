"""Block hashes from the endpoints: the end of a complete run is remembered by its hashes, so
that the next run notices a reorg there."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from pipeline.config.endpoints import Endpoint
from pipeline.config.settings import BackfillConfig
from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.classify import reading_answer
from pipeline.fetch.ratecontrol import Throttle
from pipeline.fetch.rpc import RpcClient
from pipeline.plan.runplan import Plan


def start_tip_hashes(
    endpoints: list[Endpoint], config: BackfillConfig, plan: Plan, blocks: list[int]
) -> Future:
    """Fetch the hashes of `blocks` (the end of a complete run, which let the next run notice a
    reorg there) in the background; the future gives (hashes, error message or "")."""

    def fetch() -> tuple[dict[int, str], str]:
        try:
            # The supervisor reads this future: nothing an endpoint answers may raise out of it.
            with reading_answer("the block hashes"):
                return hashes_from_any(endpoints, config, plan, blocks), ""
        except RpcError as err:
            return {}, str(err)

    pool = ThreadPoolExecutor(1)
    future = pool.submit(fetch)
    pool.shutdown(wait=False)  # the fetch goes on while the caller does other things
    return future


def hashes_from_any(
    endpoints: list[Endpoint], config: BackfillConfig, plan: Plan, blocks: list[int]
) -> dict[int, str]:
    """Block hashes from the most advanced endpoint that answers; the last error if none does."""
    ranked = sorted(endpoints, key=lambda e: plan.heads.get(e.name, -1), reverse=True)
    error = RpcError(ErrorKind.CONNECTION, "no endpoint")
    for endpoint in ranked:
        try:
            return block_hashes(endpoint, config.timeout, blocks)
        except RpcError as err:
            error = err
    raise error


def block_hashes(endpoint: Endpoint, timeout: float, blocks: list[int]) -> dict[int, str]:
    """The canonical hash of each block: one batch request where the endpoint takes batches,
    else one request per block within its pinned --concurrency (else one at a time) and --rps."""
    local = threading.local()
    throttle = Throttle(endpoint.rps)
    time.sleep(throttle.reserve())
    batch = RpcClient(endpoint, timeout)
    try:
        return batch.block_hashes(blocks)
    except RpcError:
        pass  # no batches here (or a fault): the requests one by one tell which
    finally:
        batch.close()

    def lookup(block: int) -> str:
        if not hasattr(local, "client"):
            local.client = RpcClient(endpoint, timeout)
        time.sleep(throttle.reserve())
        with local.client.reading(f"the hash of block {block}"):
            return local.client.block_hash(block)

    with ThreadPoolExecutor(max_workers=endpoint.concurrency or 1) as pool:
        return dict(zip(blocks, pool.map(lookup, blocks), strict=True))
