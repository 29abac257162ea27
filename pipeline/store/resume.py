"""Before a run writes anything: take stock of the output folder and decide what is left to do.

An earlier run may have stopped at any instant. What it left is sorted out here, once:
temporary files are deleted; final files the manifest does not list (a compaction cut short) are
deleted, since their fragments are still staged; fragments the manifest already covers (a
cleanup cut short) are deleted; the other fragments are complete and are reused. A reorg at the
end of the last run is looked for, and the final files it made stale are dropped. What is not
covered then is exactly what this run fetches.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.config.endpoints import Endpoint
from pipeline.config.settings import BackfillConfig
from pipeline.errors import ConfigError, ErrorKind, RpcError
from pipeline.fetch.ratecontrol import Throttle
from pipeline.fetch.rpc import RpcClient
from pipeline.plan.chunks import gaps, merge_ranges
from pipeline.plan.preflight import Plan
from pipeline.store.files import fragment_rows
from pipeline.store.layout import (
    INCOMING_DIR,
    LOCK_FILE,
    LOGS_DIR,
    MANIFEST_FILE,
    STAGING_DIR,
    SUMMARY_FILE,
    WRITER_LOCK_FILE,
    final_files,
    fragments,
    temp_files,
)
from pipeline.store.manifest import (
    Manifest,
    describe_filter,
    filter_json,
    load_manifest,
    save_manifest,
)

# How many blocks at the end of a run are remembered to notice a reorg there. A reorg deeper than
# this still changes the first of them, and the whole final file holding it is fetched again.
TIP_BLOCKS = 32
ORPHAN_WRITER_WAIT_S = 10.0


@dataclass(frozen=True)
class Resume:
    """What this run starts from: the manifest, reusable fragments, and the ranges to fetch."""

    manifest: Manifest
    staged: tuple[tuple[int, int], ...]  # complete fragments kept from an earlier run
    todo: tuple[tuple[int, int], ...]  # block ranges this run fetches
    notes: tuple[str, ...] = ()  # what was repaired, for the user


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold the output folder for one run: a second run into it is refused, not interleaved.
    The locks die with their processes, so a killed run never leaves one behind."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = (out / LOCK_FILE).open("a+")
    except OSError as exc:
        raise ConfigError(f"cannot use --output {out}: {exc.strerror or exc}") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another backfill is writing to {out}: wait for it, or choose another --output"
            ) from None
        # The writer of a run whose supervisor was just killed stops within a second or two;
        # until then it may still be writing here.
        with writer_lock(out):
            pass
        yield


@contextlib.contextmanager
def writer_lock(out: Path) -> Iterator[None]:
    """Held by a run's writer process while it writes (and checked before a run starts)."""
    with (out / WRITER_LOCK_FILE).open("a+") as handle:
        deadline = time.monotonic() + ORPHAN_WRITER_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"a writer process of an earlier run still holds {out}: stop it first"
                    ) from None
                time.sleep(0.1)
        yield


def prepare_output(config: BackfillConfig, plan: Plan) -> Resume:
    """Reconcile the output folder with its manifest (or start one) and plan what is missing.
    Raises ConfigError if the folder holds another filter's or chain's logs."""
    out = config.output
    try:
        if config.overwrite:
            _wipe(out)
        (out / LOGS_DIR).mkdir(parents=True, exist_ok=True)
        (out / STAGING_DIR).mkdir(exist_ok=True)
        discard_incoming(out)
        (out / INCOMING_DIR).mkdir()
        for path in temp_files(out):
            path.unlink()
        manifest = _manifest_for(config, plan)
        notes = _reconcile(out, manifest)
        staged = _reusable_fragments(out, manifest)
        notes += _repair_reorg(out, manifest, staged, config, plan)
        save_manifest(out, manifest)
    except OSError as exc:
        raise ConfigError(f"cannot use --output {out}: {exc.strerror or exc}") from None
    covered = merge_ranges([*manifest.covered, *staged])
    todo = gaps(plan.from_block, plan.to_block, covered)
    return Resume(manifest, tuple(staged), tuple(todo), tuple(notes))


def _wipe(out: Path) -> None:
    for name in final_files(out):
        (out / LOGS_DIR / name).unlink()
    shutil.rmtree(out / STAGING_DIR, ignore_errors=True)
    for name in (MANIFEST_FILE, SUMMARY_FILE):
        (out / name).unlink(missing_ok=True)


def _manifest_for(config: BackfillConfig, plan: Plan) -> Manifest:
    out = config.output
    wanted = filter_json(config.log_filter)
    manifest = load_manifest(out)
    if manifest is None:
        if final_files(out):
            raise ConfigError(
                f"{out} holds log files but no {MANIFEST_FILE} (another tool or an older "
                "version wrote them): pass --overwrite to replace them, or choose another --output"
            )
        return Manifest(plan.chain_id, wanted, config.hex_output)
    if manifest.chain_id != plan.chain_id:
        raise ConfigError(
            f"{out} holds logs of chain {manifest.chain_id}, the endpoints serve chain "
            f"{plan.chain_id}: choose another --output, or pass --overwrite to start over"
        )
    if manifest.log_filter != wanted:
        raise ConfigError(
            f"{out} holds logs of another filter ({describe_filter(manifest.log_filter)}; this run "
            f"asks for {describe_filter(wanted)}): choose another --output, or pass --overwrite"
        )
    if manifest.hex_output != config.hex_output:
        held = "0x strings (--hex)" if manifest.hex_output else "raw bytes"
        raise ConfigError(
            f"{out} holds {held}: run with the same --hex setting, or pass --overwrite"
        )
    return manifest


def _reconcile(out: Path, manifest: Manifest) -> list[str]:
    notes = []
    on_disk = final_files(out)
    for name in on_disk.keys() - manifest.files.keys():
        (out / LOGS_DIR / name).unlink()  # compacted, but not yet recorded: its fragments remain
    for name in manifest.files.keys() - on_disk.keys():
        manifest.drop_file(name)
        notes.append(f"{name} is missing from {out / LOGS_DIR}: its blocks will be fetched again")
    return notes


def discard_incoming(out: Path) -> None:
    """Delete results no writer accepted (a run stopped or killed before it could)."""
    shutil.rmtree(out / INCOMING_DIR, ignore_errors=True)


def _readable(fragment: Path) -> bool:
    try:
        fragment_rows(fragment)
    except (OSError, pa.ArrowInvalid):
        return False
    return True


def _reusable_fragments(out: Path, manifest: Manifest) -> list[tuple[int, int]]:
    staged: list[tuple[int, int]] = []
    covered = list(manifest.covered)
    for start, end, path in fragments(out):
        if any(a <= end and start <= b for a, b in covered) or not _readable(path):
            path.unlink()  # already compacted (or overlapping, or not a fragment): refetched
            continue
        staged.append((start, end))
        covered.append((start, end))
    return staged


def _repair_reorg(
    out: Path,
    manifest: Manifest,
    staged: list[tuple[int, int]],
    config: BackfillConfig,
    plan: Plan,
) -> list[str]:
    """Compare the block hashes kept at the last run's end with the chain now; drop the final
    files and fragments from the first block that changed, so that they are fetched again."""
    if not manifest.tip:
        return []
    try:
        now = hashes_from_any(list(config.endpoints), config, plan, sorted(manifest.tip))
    except RpcError as err:
        return [f"could not check the last run's end for a reorg ({err}); kept it as it is"]
    changed = [block for block, digest in sorted(manifest.tip.items()) if now[block] != digest]
    if not changed:
        return []
    manifest.tip = {}
    first = changed[0]
    for name, entry in list(manifest.files.items()):
        if entry["to_block"] >= first:
            manifest.drop_file(name)
            (out / LOGS_DIR / name).unlink(missing_ok=True)
    for start, end, path in fragments(out):
        if end >= first:
            path.unlink()
            staged.remove((start, end))
    manifest.drop_range(first)
    return [f"block {first} is no longer the one stored (a reorg): fetching from there again"]


def start_tip_hashes(
    endpoints: list[Endpoint], config: BackfillConfig, plan: Plan, blocks: list[int]
) -> Future:
    """Fetch the hashes of `blocks` (the end of a complete run, which let the next run notice a
    reorg there) in the background; the future gives (hashes, error message or "")."""

    def fetch() -> tuple[dict[int, str], str]:
        try:
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
    else one request per block within its --concurrency and --rps (one client per thread)."""
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
        return local.client.block_hash(block)

    with ThreadPoolExecutor(max_workers=endpoint.concurrency) as pool:
        return dict(zip(blocks, pool.map(lookup, blocks), strict=True))


def tip_blocks(covered: list[tuple[int, int]], end: int) -> list[int]:
    """The covered blocks at the end of a run whose hashes are remembered."""
    start = next((a for a, b in covered if a <= end <= b), None)
    return [] if start is None else list(range(max(start, end - TIP_BLOCKS + 1), end + 1))
