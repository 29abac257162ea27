"""The summary.json document of a run, and the per-endpoint table printed at its end."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

import orjson

from pipeline.messages import Task
from pipeline.plan.chunks import merge_ranges
from pipeline.report.stats import EndpointStats
from pipeline.report.table import render_table
from pipeline.store.layout import EVENTS_DIR, SUMMARY_FILE
from pipeline.store.target import Store, as_store

TABLE_HEADER = (
    "endpoint", "requests", "failures", "splits", "tasks", "logs", "avg ms", "p50 ms", "p95 ms",
    "state",
)  # fmt: skip
_COUNTS = ("requests", "failures", "splits", "tasks", "logs")
_LATENCIES = ("avg_latency_ms", "p50_latency_ms", "p95_latency_ms")


def build_summary(
    *,
    chain_id: int,
    from_block: int,
    to_block: int,
    end_reason: str,
    blocks: int,
    already_stored_blocks: int,
    files: int,
    stored_logs: int,
    seconds: float,
    endpoints: Iterable[EndpointStats],
    failed: Sequence[Task],
    unfetched: Sequence[Task],
    interrupted: bool,
    error: str,
    timeline: str | None,
    events: list[dict] | None = None,
) -> dict:
    """The summary.json document. `blocks` and the endpoints' logs are what this run stored,
    `stored_logs` and `files` what the output folder holds; `error` is "" when there was none."""
    stats = list(endpoints)
    logs = sum(s.logs for s in stats)
    return {
        "chain_id": chain_id,
        "from_block": from_block,
        "to_block": to_block,
        "end_reason": end_reason,
        "blocks": blocks,
        "already_stored_blocks": already_stored_blocks,
        "logs": logs,
        "files": files,
        "stored_logs": stored_logs,
        "seconds": round(seconds, 3),
        "logs_per_second": round(logs / seconds, 1) if seconds else 0.0,
        "endpoints": [s.to_json() for s in stats],
        "failed_ranges": ranges_json(failed),
        "unfetched_ranges": ranges_json(unfetched),
        "interrupted": interrupted,
        "error": error or None,
        "timeline": timeline,
        "events": events or [],
    }


def event_summaries(events: list[dict], totals: dict[str, dict]) -> list[dict]:
    """summary.json's `events`: per decoded event, its folder (relative to OUT) and the rows
    and decode failures of the whole folder, with the first few failed logs."""
    out = []
    for event in events:
        total = totals.get(event["folder"], {})
        out.append(
            {
                "name": event["name"],
                "signature": event["signature"],
                "folder": f"{EVENTS_DIR}/{event['folder']}",
                "rows": total.get("rows", 0),
                "decode_failures": total.get("decode_failures", 0),
                "failure_examples": total.get("examples", []),
            }
        )
    return out


def ranges_json(tasks: Sequence[Task]) -> list[dict]:
    """Merged block ranges of `tasks`, with the last error seen in each."""
    errors = {t.start: t.last_error for t in tasks}
    out = []
    for lo, hi in merge_ranges((t.start, t.end) for t in tasks):
        reasons = sorted({errors[s] for s in errors if lo <= s <= hi and errors[s]})
        out.append({"from_block": lo, "to_block": hi, "error": "; ".join(reasons[:3]) or None})
    return out


def write_summary(out_dir: Path | Store, summary: dict) -> Path | PurePosixPath:
    """Write summary.json atomically and durably (to the folder or the store)."""
    store = as_store(out_dir)
    store.write(SUMMARY_FILE, orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return store.location(SUMMARY_FILE)


def format_table(endpoints: list[dict]) -> str:
    """The per-endpoint statistics (summary.json's `endpoints`) as an aligned text table."""
    rows = [
        (
            e["name"],
            *(e[k] for k in _COUNTS),
            *("-" if e[k] is None else f"{e[k]:.1f}" for k in _LATENCIES),
            e["state"],
        )
        for e in endpoints
    ]
    # Names and states align left, numbers right.
    return render_table(TABLE_HEADER, rows, left=(0, len(TABLE_HEADER) - 1))
