"""`pipeline status OUT`: what an output folder holds, read from its manifest (nothing changes)."""

from __future__ import annotations

from pathlib import Path

import orjson

from pipeline.errors import ConfigError
from pipeline.plan.chunks import gaps, merge_ranges
from pipeline.store.files import fragment_rows
from pipeline.store.layout import LOGS_DIR, MANIFEST_FILE, SUMMARY_FILE, fragments
from pipeline.store.manifest import describe_filter, load_manifest
from pipeline.store.target import Store, as_store


def folder_status(out: Path | Store) -> dict:
    """Coverage, gaps, rows, files and the last run's verdict of an output folder (or store;
    of object storage, the fragments staged on this machine count as staged)."""
    store = as_store(out)
    manifest = load_manifest(store)
    if manifest is None:
        raise ConfigError(f"{store.uri} has no {MANIFEST_FILE}: it is not a backfill output folder")
    staged = [(a, b, fragment_rows(path)) for a, b, path in fragments(store.staging)]
    covered = merge_ranges([*manifest.covered, *((a, b) for a, b, _ in staged)])
    summary = store.read(SUMMARY_FILE)
    last_run = orjson.loads(summary) if summary is not None else {}
    return {
        "chain_id": manifest.chain_id,
        "filter": manifest.log_filter,
        "covered": covered,
        "gaps": gaps(covered[0][0], covered[-1][1], covered) if covered else [],
        "rows": manifest.rows + sum(rows for *_, rows in staged),
        "files": [(name, entry) for name, entry in sorted(manifest.files.items())],
        "staged": staged,
        "last_run": last_run,
    }


def format_status(out: Path | str, status: dict) -> str:
    """The status as lines of text."""
    ranges = lambda rs: ", ".join(f"{a}-{b}" for a, b, *_ in rs) or "none"  # noqa: E731
    blocks = sum(b - a + 1 for a, b in status["covered"])
    lines = [
        f"{out}: chain {status['chain_id']}, {describe_filter(status['filter'])}",
        f"covered: {ranges(status['covered'])} ({blocks:,} blocks)",
        f"gaps: {ranges(status['gaps'])}",
        f"rows: {status['rows']:,} in {len(status['files'])} file(s)",
    ]
    if status["staged"]:
        staged = len(status["staged"])
        lines.append(f"staged, not yet compacted: {staged} fragments (the next run compacts them)")
    for name, entry in status["files"]:
        span = f"{entry['from_block']}-{entry['to_block']}"
        lines.append(f"  {LOGS_DIR}/{name}  blocks {span}  {entry['rows']:,} rows")
    run = status["last_run"]
    if run:
        verdict = "ok"
        if run.get("interrupted"):
            verdict = "interrupted"
        if run.get("error"):
            verdict = f"error: {run['error']}"
        lines.append(
            f"last run: blocks {run.get('from_block')}-{run.get('to_block')} "
            f"({run.get('end_reason') or 'given'}), {verdict}"
        )
    return "\n".join(lines)
