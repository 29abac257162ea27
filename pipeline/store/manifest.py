"""The manifest: the proof of coverage of an output folder.

It records which chain and which filter the folder holds, which block ranges are complete (in
final files), the final files themselves, and the block hashes at the end of the last run (to
notice a reorg there on the next run). With decoded events (--event, --abi), it also records
which events the folder decodes and, for each final file, the event files beside it with their
rows and decode failures. Staged fragments are complete too; they are listed by the
folder itself (naming.fragments) until compaction moves them into final files and here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from pipeline.config.settings import LogFilter
from pipeline.errors import ConfigError
from pipeline.plan.chunks import merge_ranges
from pipeline.store.layout import EVENTS_DIR, LOGS_DIR, MANIFEST_FILE
from pipeline.store.target import Store, as_store

MAX_EXAMPLES = 5  # failed logs kept as examples per event, per file and in the folder's totals

# 2: the logs carry block_timestamp, and event tables may sit beside them. A folder of version 1
# is refused (its files lack the column; mixing both schemas would break readers' globs).
VERSION = 2


@dataclass
class Manifest:
    """What an output folder holds (mutable: the writer extends it as it compacts)."""

    chain_id: int
    log_filter: dict
    hex_output: bool
    covered: list[tuple[int, int]] = field(default_factory=list)  # merged, in block order
    files: dict[str, dict] = field(default_factory=dict)  # name -> from_block, to_block, rows
    tip: dict[int, str] = field(default_factory=dict)  # block -> hash, at the last run's end
    # The decoded events: name, signature, layout and folder of each (see store.events).
    events: list[dict] = field(default_factory=list)
    # Ranges without logs, with the endpoints that answered them (from_block, to_block,
    # fetched_by); a final file's entry has its own fetched_by. Fingerprints of endpoints
    # (config.endpoints), so that a later run can take back what a liar it caught stored.
    empty: list[dict] = field(default_factory=list)
    version: int = VERSION

    def add(
        self,
        start: int,
        end: int,
        name: str | None,
        rows: int,
        events: dict | None = None,
        fetched_by: list[str] | None = None,
    ) -> None:
        """Record blocks start..end as complete, stored in file `name` (None: no logs), with
        the event files beside it ({folder: {file, rows, decode_failures, examples}}) and the
        fingerprints of the endpoints that fetched them."""
        self.covered = merge_ranges([*self.covered, (start, end)])
        provenance = {"fetched_by": sorted(fetched_by)} if fetched_by else {}
        if name is not None:
            self.files[name] = {"from_block": start, "to_block": end, "rows": rows}
            if events:
                self.files[name]["events"] = events
            self.files[name].update(provenance)
        elif provenance:
            self.empty.append({"from_block": start, "to_block": end, **provenance})

    def drop_file(self, name: str) -> dict:
        """Forget a final file and the coverage it held (a reorg made it stale); its entry."""
        entry = self.files.pop(name)
        lo, hi = entry["from_block"], entry["to_block"]
        self.drop_range(lo, hi)
        return entry

    def event_totals(self) -> dict[str, dict]:
        """Per event folder: rows, decode failures and the first few failed logs, over every
        final file."""
        totals = {
            e["folder"]: {"rows": 0, "decode_failures": 0, "examples": []} for e in self.events
        }
        for entry in self.files.values():
            for folder, stored in entry.get("events", {}).items():
                total = totals.setdefault(folder, {"rows": 0, "decode_failures": 0, "examples": []})
                total["rows"] += stored["rows"]
                total["decode_failures"] += stored["decode_failures"]
                room = MAX_EXAMPLES - len(total["examples"])
                total["examples"] += stored.get("examples", [])[: max(room, 0)]
        return totals

    def drop_range(self, lo: int, hi: float = float("inf")) -> None:
        """Forget coverage of blocks lo..hi (to the end by default)."""
        kept = []
        for a, b in self.covered:
            kept += [(a, min(b, lo - 1))] if a < lo else []
            kept += [(max(a, hi + 1), b)] if b > hi else []
        self.covered = [(a, b) for a, b in kept if a <= b]
        self.empty = [e for e in self.empty if e["to_block"] < lo or e["from_block"] > hi]

    @property
    def rows(self) -> int:
        """Rows in all final files."""
        return sum(entry["rows"] for entry in self.files.values())

    def to_json(self) -> dict:
        """The document stored as manifest.json."""
        return {
            "version": VERSION,
            "chain_id": self.chain_id,
            "filter": self.log_filter,
            "hex": self.hex_output,
            "covered": [{"from_block": a, "to_block": b} for a, b in self.covered],
            "files": [{"name": name, **entry} for name, entry in sorted(self.files.items())],
            "tip": {str(block): digest for block, digest in sorted(self.tip.items())},
            "events": self.events,
            "empty": self.empty,
        }


def filter_json(log_filter: LogFilter) -> dict:
    """The filter as stored in the manifest (normalised: lower-case, sorted)."""
    return {
        "addresses": sorted(log_filter.addresses),
        "topics": [sorted(values) for values in log_filter.topics],
    }


def describe_filter(log_filter: dict) -> str:
    """A stored filter in words, for messages."""
    parts = [f"addresses {', '.join(log_filter['addresses'])}"] if log_filter["addresses"] else []
    for i, values in enumerate(log_filter["topics"]):
        parts += [f"topic{i} {', '.join(values)}"] if values else []
    return "; ".join(parts) or "every log"


def load_manifest(out_dir: Path | Store) -> Manifest | None:
    """The folder's (or store's) manifest, or None if it has none."""
    store = as_store(out_dir)
    path = store.shown(MANIFEST_FILE)
    try:
        stored = store.read(MANIFEST_FILE)
        if stored is None:
            return None
        doc = orjson.loads(stored)
        return Manifest(
            chain_id=int(doc["chain_id"]),
            log_filter=dict(doc["filter"]),
            hex_output=bool(doc["hex"]),
            covered=[(int(r["from_block"]), int(r["to_block"])) for r in doc["covered"]],
            files={f["name"]: _file_entry(f) for f in doc["files"]},
            tip={int(block): str(digest) for block, digest in doc.get("tip", {}).items()},
            events=[dict(e) for e in doc.get("events", [])],
            empty=[_empty_entry(e) for e in doc.get("empty", [])],
            version=int(doc.get("version", 1)),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} is unreadable ({exc}): move it away, or pass --overwrite to start over"
        ) from None


def _file_entry(stored: dict) -> dict:
    entry: dict = {k: int(stored[k]) for k in ("from_block", "to_block", "rows")}
    if stored.get("events"):
        entry["events"] = {folder: dict(e) for folder, e in stored["events"].items()}
    if stored.get("fetched_by"):
        entry["fetched_by"] = [str(f) for f in stored["fetched_by"]]
    return entry


def _empty_entry(stored: dict) -> dict:
    entry: dict = {k: int(stored[k]) for k in ("from_block", "to_block")}
    return {**entry, "fetched_by": [str(f) for f in stored["fetched_by"]]}


def events_json(outputs: tuple) -> list[dict]:
    """The decoded events as the manifest records them (store.events.EventOutput each)."""
    return [
        {"name": o.spec.name, "signature": o.spec.signature, "layout": o.spec.layout,
         "folder": o.folder}
        for o in outputs
    ]  # fmt: skip


def save_manifest(out_dir: Path | Store, manifest: Manifest) -> None:
    """Replace manifest.json atomically and durably: the commit point. In object storage,
    only while this run holds the prefix's lease (every upload is fenced: store.target)."""
    store = as_store(out_dir)
    document = orjson.dumps(manifest.to_json(), option=orjson.OPT_INDENT_2)
    store.write(MANIFEST_FILE, document)


def file_keys(name: str, entry: dict) -> list[str]:
    """The keys of a final file and of the event files beside it."""
    events = entry.get("events", {})
    return [f"{LOGS_DIR}/{name}"] + [f"{EVENTS_DIR}/{f}/{e['file']}" for f, e in events.items()]
