"""Decoded event tables: while a final logs file is written, its rows are decoded into one file
per event (OUT/events/<folder>/), so that every final file has its event files beside it and the
manifest records them together: a crash leaves all of them or none recorded."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.decode.columns import decode_all
from pipeline.decode.folders import folder_names
from pipeline.decode.schema import output_schema
from pipeline.decode.signature import EventSpec
from pipeline.store.layout import EVENTS_DIR, event_file_name
from pipeline.store.manifest import MAX_EXAMPLES
from pipeline.store.target import Store, as_store

COMPRESSION = "zstd"


@dataclass(frozen=True)
class EventOutput:
    """One event to decode and the folder its table lives in."""

    spec: EventSpec
    folder: str


def event_outputs(specs: tuple[EventSpec, ...]) -> tuple[EventOutput, ...]:
    """The events of a run with their distinct folder names, in the order given."""
    names = folder_names(specs)
    return tuple(EventOutput(spec, names[spec]) for spec in specs)


@dataclass
class _Open:
    output: EventOutput
    writer: pq.ParquetWriter
    name: str
    rows: int = 0
    failures: int = 0
    examples: list[dict] = field(default_factory=list)


class WindowEvents:
    """Decodes the rows of one final file (blocks start..end) as they are written; `entries`
    holds, once the `with` block succeeded, each event's file, rows and decode failures."""

    def __init__(
        self,
        out: Path | Store,
        outputs: tuple[EventOutput, ...],
        start: int,
        end: int,
        raw_schema: pa.Schema,
        hex_output: bool,
    ) -> None:
        self.store, self.outputs, self.start, self.end = as_store(out), outputs, start, end
        self.hex_output = hex_output
        index = raw_schema.get_field_index("block_timestamp")
        self.timestamp_type = raw_schema.field(index).type if index >= 0 else None
        self.entries: dict[str, dict] = {}
        self._open: list[_Open] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> WindowEvents:
        for output in self.outputs:
            name = event_file_name(output.folder, self.start, self.end)
            tmp = self._stack.enter_context(
                self.store.atomic(f"{EVENTS_DIR}/{output.folder}/{name}")
            )
            schema = output_schema(output.spec, self.hex_output, self.timestamp_type)
            writer = pq.ParquetWriter(tmp, schema, compression=COMPRESSION)
            self._open.append(_Open(output, writer, name))
        return self

    def add(self, raw: pa.Table) -> None:
        """Decode one group of raw rows (in block order) into each event's file."""
        if not self._open:
            return
        decoded = decode_all(raw, [o.output.spec for o in self._open], self.hex_output)
        for each in self._open:
            result = decoded[each.output.spec]
            if result.table.num_rows:
                each.writer.write_table(result.table.cast(each.writer.schema))
            each.rows += result.table.num_rows
            each.failures += result.failures
            room = MAX_EXAMPLES - len(each.examples)
            each.examples += [_plain(e) for e in result.examples[: max(room, 0)]]

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        # Writers close first (their footers), then the atomic paths commit, or clean up.
        for each in self._open:
            each.writer.close()
        if error is None:
            self.entries = {
                each.output.folder: {
                    "file": each.name,
                    "rows": each.rows,
                    "decode_failures": each.failures,
                    "examples": each.examples,
                }
                for each in self._open
            }
        self._stack.__exit__(kind, error, trace)


def _plain(example: dict) -> dict:
    """An example failure as JSON-ready values (hashes as 0x hex)."""
    return {k: "0x" + v.hex() if isinstance(v, bytes) else v for k, v in example.items()}
