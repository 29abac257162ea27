"""Before a run writes anything: take stock of the output folder and decide what is left to do.

An earlier run may have stopped at any instant. What it left is sorted out here, once:
temporary files are deleted; final files the manifest does not list (a compaction cut short) are
deleted, since their fragments are still staged; fragments the manifest already covers (a
cleanup cut short) are deleted; the other fragments are complete and are reused. A reorg at the
end of the last run is looked for, and the final files it made stale are dropped. What is not
covered then is exactly what this run fetches.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipeline.config.settings import BackfillConfig
from pipeline.errors import ConfigError, RpcError
from pipeline.plan.chunks import gaps, merge_ranges
from pipeline.plan.runplan import Plan
from pipeline.store.access import store_error
from pipeline.store.events import EventOutput, event_outputs
from pipeline.store.files import fragment_rows
from pipeline.store.layout import (
    EVENTS_DIR,
    INCOMING_DIR,
    LOGS_DIR,
    MANIFEST_FILE,
    STAGING_DIR,
    SUMMARY_FILE,
    fragments,
    parse_log_file_name,
    temp_files,
)
from pipeline.store.manifest import (
    VERSION,
    Manifest,
    describe_filter,
    events_json,
    file_keys,
    filter_json,
    load_manifest,
    save_manifest,
)
from pipeline.store.target import Store, as_store, open_store

# The chain's block hashes now, by block number (raises RpcError when no endpoint answers).
HashLookup = Callable[[list[int]], dict[int, str]]
# How many blocks at the end of a run are remembered to notice a reorg there. A reorg deeper than
# this still changes the first of them, and the whole final file holding it is fetched again.
TIP_BLOCKS = 32


@dataclass(frozen=True)
class Resume:
    """What this run starts from: the manifest, reusable fragments, and the ranges to fetch."""

    manifest: Manifest
    staged: tuple[tuple[int, int], ...]  # complete fragments kept from an earlier run
    todo: tuple[tuple[int, int], ...]  # block ranges this run fetches
    notes: tuple[str, ...] = ()  # what was repaired, for the user
    events: tuple[EventOutput, ...] = ()  # the events decoded beside the logs, with folders
    store: Store | None = None  # where final files go (None: the folder config.output)


def prepare_output(
    config: BackfillConfig,
    plan: Plan,
    chain_hashes: HashLookup | None = None,
    store: Store | None = None,
) -> Resume:
    """Reconcile the output (folder or store) with its manifest (or start one) and plan what is
    missing; `chain_hashes` gives the chain's block hashes now, to notice a reorg at the last
    run's end (None: no check); `store` is where final files go (default: the folder
    config.output). Raises ConfigError if it holds another filter's or chain's logs."""
    store = store or open_store(config.output)
    staging = store.staging  # the output folder itself, unless the output is object storage
    try:
        if config.overwrite:
            _wipe(store)
        if not store.remote:
            (staging / LOGS_DIR).mkdir(parents=True, exist_ok=True)
        (staging / STAGING_DIR).mkdir(parents=True, exist_ok=True)
        discard_incoming(staging)
        (staging / INCOMING_DIR).mkdir()
        for path in temp_files(staging):
            path.unlink()
        outputs = event_outputs(config.events)
        manifest = _manifest_for(config, plan, events_json(outputs), store)
        notes = _reconcile(store, manifest)
        staged = _reusable_fragments(staging, manifest)
        if chain_hashes is not None:
            notes += _repair_reorg(store, manifest, staged, chain_hashes)
        save_manifest(store, manifest)
    except OSError as exc:
        if store.remote:
            raise ConfigError(store_error(store.uri, exc)) from None
        raise ConfigError(f"cannot use --output {store.uri}: {exc.strerror or exc}") from None
    covered = merge_ranges([*manifest.covered, *staged])
    todo = gaps(plan.from_block, plan.to_block, covered)
    return Resume(manifest, tuple(staged), tuple(todo), tuple(notes), outputs, store)


def _wipe(store: Store) -> None:
    for name in _final_names(store):
        store.delete(f"{LOGS_DIR}/{name}")
    shutil.rmtree(store.staging / STAGING_DIR, ignore_errors=True)
    store.delete_tree(EVENTS_DIR)
    for name in (MANIFEST_FILE, SUMMARY_FILE):
        store.delete(name)


def _final_names(store: Store) -> dict[str, tuple[int, int]]:
    """Final log files in the store: name -> block range."""
    found = {name: parse_log_file_name(name) for name in store.names(LOGS_DIR)}
    return {name: blocks for name, blocks in found.items() if blocks}


def _manifest_for(config: BackfillConfig, plan: Plan, events: list[dict], store: Store) -> Manifest:
    out = store.uri
    wanted = filter_json(config.log_filter)
    manifest = load_manifest(store)
    if manifest is None:
        if _final_names(store):
            raise ConfigError(
                f"{out} holds log files but no {MANIFEST_FILE} (another tool or an older "
                "version wrote them): pass --overwrite to replace them, or choose another --output"
            )
        return Manifest(plan.chain_id, wanted, config.hex_output, events=events)
    if manifest.version < VERSION:
        raise ConfigError(
            f"{out} was written by an older version whose files have no block_timestamp "
            "column: pass --overwrite to fetch it again, or choose another --output"
        )
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
    if manifest.events != events:
        raise ConfigError(
            f"{out} decodes other events ({_describe_events(manifest.events)}; this run asks "
            f"for {_describe_events(events)}): choose another --output, or pass --overwrite"
        )
    if manifest.hex_output != config.hex_output:
        held = "0x strings (--hex)" if manifest.hex_output else "raw bytes"
        raise ConfigError(
            f"{out} holds {held}: run with the same --hex setting, or pass --overwrite"
        )
    return manifest


def _describe_events(events: list[dict]) -> str:
    return ", ".join(e["layout"] for e in events) or "none"


def _reconcile(store: Store, manifest: Manifest) -> list[str]:
    notes = []
    on_disk = _final_names(store)
    for name in on_disk.keys() - manifest.files.keys():
        # Compacted, but not yet recorded: its fragments remain (or, staged on another machine,
        # its blocks are fetched again).
        store.delete(f"{LOGS_DIR}/{name}")
    recorded = {
        f"{EVENTS_DIR}/{folder}/{stored['file']}"
        for entry in manifest.files.values()
        for folder, stored in entry.get("events", {}).items()
    }
    for folder in store.folders(EVENTS_DIR):
        for key in [f"{EVENTS_DIR}/{folder}/{n}" for n in store.names(f"{EVENTS_DIR}/{folder}")]:
            if key not in recorded:
                store.delete(key)  # written beside a final file that was never recorded
    for name, entry in list(manifest.files.items()):
        missing = [key for key in file_keys(name, entry) if not store.exists(key)]
        if missing:
            drop_file(store, manifest, name)
            notes.append(
                f"{store.shown(missing[0])} is missing: the blocks of {name} will be fetched again"
            )
    return notes


def drop_file(out: Path | Store, manifest: Manifest, name: str) -> None:
    """Forget a final file and delete it with its event files: its blocks are fetched again."""
    store = as_store(out)
    entry = manifest.drop_file(name)
    for key in file_keys(name, entry):
        store.delete(key)


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
    store: Store, manifest: Manifest, staged: list[tuple[int, int]], chain_hashes: HashLookup
) -> list[str]:
    """Compare the block hashes kept at the last run's end with the chain now; drop the final
    files and fragments from the first block that changed, so that they are fetched again."""
    if not manifest.tip:
        return []
    try:
        now = chain_hashes(sorted(manifest.tip))
    except RpcError as err:
        return [f"could not check the last run's end for a reorg ({err}); kept it as it is"]
    changed = [block for block, digest in sorted(manifest.tip.items()) if now[block] != digest]
    if not changed:
        return []
    manifest.tip = {}
    first = changed[0]
    for name, entry in list(manifest.files.items()):
        if entry["to_block"] >= first:
            drop_file(store, manifest, name)
    for start, end, path in fragments(store.staging):
        if end >= first:
            path.unlink()
            staged.remove((start, end))
    manifest.drop_range(first)
    return [f"block {first} is no longer the one stored (a reorg): fetching from there again"]


def tip_blocks(covered: list[tuple[int, int]], end: int) -> list[int]:
    """The covered blocks at the end of a run whose hashes are remembered."""
    start = next((a for a, b in covered if a <= end <= b), None)
    return [] if start is None else list(range(max(start, end - TIP_BLOCKS + 1), end + 1))
