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
from pipeline.store.events import EventOutput, event_outputs
from pipeline.store.files import fragment_rows
from pipeline.store.layout import (
    EVENTS_DIR,
    INCOMING_DIR,
    LOGS_DIR,
    MANIFEST_FILE,
    STAGING_DIR,
    SUMMARY_FILE,
    event_files,
    final_files,
    fragments,
    temp_files,
)
from pipeline.store.manifest import (
    VERSION,
    Manifest,
    describe_filter,
    events_json,
    filter_json,
    load_manifest,
    save_manifest,
)

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


def prepare_output(
    config: BackfillConfig, plan: Plan, chain_hashes: HashLookup | None = None
) -> Resume:
    """Reconcile the output folder with its manifest (or start one) and plan what is missing;
    `chain_hashes` gives the chain's block hashes now, to notice a reorg at the last run's end
    (None: no check). Raises ConfigError if the folder holds another filter's or chain's logs."""
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
        outputs = event_outputs(config.events)
        manifest = _manifest_for(config, plan, events_json(outputs))
        notes = _reconcile(out, manifest)
        staged = _reusable_fragments(out, manifest)
        if chain_hashes is not None:
            notes += _repair_reorg(out, manifest, staged, chain_hashes)
        save_manifest(out, manifest)
    except OSError as exc:
        raise ConfigError(f"cannot use --output {out}: {exc.strerror or exc}") from None
    covered = merge_ranges([*manifest.covered, *staged])
    todo = gaps(plan.from_block, plan.to_block, covered)
    return Resume(manifest, tuple(staged), tuple(todo), tuple(notes), outputs)


def _wipe(out: Path) -> None:
    for name in final_files(out):
        (out / LOGS_DIR / name).unlink()
    shutil.rmtree(out / STAGING_DIR, ignore_errors=True)
    shutil.rmtree(out / EVENTS_DIR, ignore_errors=True)
    for name in (MANIFEST_FILE, SUMMARY_FILE):
        (out / name).unlink(missing_ok=True)


def _manifest_for(config: BackfillConfig, plan: Plan, events: list[dict]) -> Manifest:
    out = config.output
    wanted = filter_json(config.log_filter)
    manifest = load_manifest(out)
    if manifest is None:
        if final_files(out):
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


def _reconcile(out: Path, manifest: Manifest) -> list[str]:
    notes = []
    on_disk = final_files(out)
    for name in on_disk.keys() - manifest.files.keys():
        (out / LOGS_DIR / name).unlink()  # compacted, but not yet recorded: its fragments remain
    recorded = {
        out / EVENTS_DIR / folder / stored["file"]
        for entry in manifest.files.values()
        for folder, stored in entry.get("events", {}).items()
    }
    for path in event_files(out):
        if path not in recorded:
            path.unlink()  # written beside a final file that was never recorded
    for name, entry in list(manifest.files.items()):
        missing = [p for p in _files_of(out, name, entry) if not p.exists()]
        if missing:
            drop_file(out, manifest, name)
            notes.append(f"{missing[0]} is missing: the blocks of {name} will be fetched again")
    return notes


def _files_of(out: Path, name: str, entry: dict) -> list[Path]:
    """A final file and the event files beside it."""
    events = entry.get("events", {})
    return [out / LOGS_DIR / name] + [out / EVENTS_DIR / f / e["file"] for f, e in events.items()]


def drop_file(out: Path, manifest: Manifest, name: str) -> None:
    """Forget a final file and delete it with its event files: its blocks are fetched again."""
    entry = manifest.drop_file(name)
    for path in _files_of(out, name, entry):
        path.unlink(missing_ok=True)


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
    out: Path, manifest: Manifest, staged: list[tuple[int, int]], chain_hashes: HashLookup
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
            drop_file(out, manifest, name)
    for start, end, path in fragments(out):
        if end >= first:
            path.unlink()
            staged.remove((start, end))
    manifest.drop_range(first)
    return [f"block {first} is no longer the one stored (a reorg): fetching from there again"]


def tip_blocks(covered: list[tuple[int, int]], end: int) -> list[int]:
    """The covered blocks at the end of a run whose hashes are remembered."""
    start = next((a for a, b in covered if a <= end <= b), None)
    return [] if start is None else list(range(max(start, end - TIP_BLOCKS + 1), end + 1))
