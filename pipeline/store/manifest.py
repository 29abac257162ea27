"""The manifest: the proof of coverage of an output folder.

It records which chain and which filter the folder holds, which block ranges are complete (in
final files), the final files themselves, and the block hashes at the end of the last run (to
notice a reorg there on the next run). Staged fragments are complete too; they are listed by the
folder itself (naming.fragments) until compaction moves them into final files and here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from pipeline.config.settings import LogFilter
from pipeline.errors import ConfigError
from pipeline.plan.chunks import merge_ranges
from pipeline.store.atomic import write_atomically
from pipeline.store.layout import MANIFEST_FILE

VERSION = 1


@dataclass
class Manifest:
    """What an output folder holds (mutable: the writer extends it as it compacts)."""

    chain_id: int
    log_filter: dict
    hex_output: bool
    covered: list[tuple[int, int]] = field(default_factory=list)  # merged, in block order
    files: dict[str, dict] = field(default_factory=dict)  # name -> from_block, to_block, rows
    tip: dict[int, str] = field(default_factory=dict)  # block -> hash, at the last run's end

    def add(self, start: int, end: int, name: str | None, rows: int) -> None:
        """Record blocks start..end as complete, stored in file `name` (None: no logs)."""
        self.covered = merge_ranges([*self.covered, (start, end)])
        if name is not None:
            self.files[name] = {"from_block": start, "to_block": end, "rows": rows}

    def drop_file(self, name: str) -> None:
        """Forget a final file and the coverage it held (a reorg made it stale)."""
        entry = self.files.pop(name)
        lo, hi = entry["from_block"], entry["to_block"]
        self.drop_range(lo, hi)

    def drop_range(self, lo: int, hi: float = float("inf")) -> None:
        """Forget coverage of blocks lo..hi (to the end by default)."""
        kept = []
        for a, b in self.covered:
            kept += [(a, min(b, lo - 1))] if a < lo else []
            kept += [(max(a, hi + 1), b)] if b > hi else []
        self.covered = [(a, b) for a, b in kept if a <= b]

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


def load_manifest(out_dir: Path) -> Manifest | None:
    """The folder's manifest, or None if it has none."""
    path = out_dir / MANIFEST_FILE
    try:
        doc = orjson.loads(path.read_bytes())
        return Manifest(
            chain_id=int(doc["chain_id"]),
            log_filter=dict(doc["filter"]),
            hex_output=bool(doc["hex"]),
            covered=[(int(r["from_block"]), int(r["to_block"])) for r in doc["covered"]],
            files={
                f["name"]: {k: int(f[k]) for k in ("from_block", "to_block", "rows")}
                for f in doc["files"]
            },
            tip={int(block): str(digest) for block, digest in doc.get("tip", {}).items()},
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path} is unreadable ({exc}): move it away, or pass --overwrite to start over"
        ) from None


def save_manifest(out_dir: Path, manifest: Manifest) -> None:
    """Replace manifest.json atomically and durably."""
    document = orjson.dumps(manifest.to_json(), option=orjson.OPT_INDENT_2)
    write_atomically(out_dir / MANIFEST_FILE, document)
