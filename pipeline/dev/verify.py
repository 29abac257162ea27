"""The one check of stored rows against the node, shared by the tests, the demo and the bench.

The node's own eth_getLogs answer is read here independently of the tool's parsers (plain JSON,
one log at a time: slow, but obviously right) and compared with the Parquet files row for row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import requests

JSON_HEADERS = {"Content-Type": "application/json"}
NODE_READ_BLOCKS = 500  # blocks per eth_getLogs when reading the node's own answer
ROW_ORDER = [("block_number", "ascending"), ("log_index", "ascending")]
# Every column that comes from the node, in the types the tool stores (bytes, not --hex strings).
ROW_SCHEMA = pa.schema(
    [
        ("block_number", pa.uint64()),
        ("log_index", pa.uint32()),
        ("block_hash", pa.binary()),
        ("transaction_index", pa.uint32()),
        ("transaction_hash", pa.binary()),
        ("address", pa.binary()),
        *((f"topic{i}", pa.binary()) for i in range(4)),
        ("data", pa.binary()),
        # Last, so that a row tuple starts (block_number, log_index, ...) as tests expect.
        ("block_timestamp", pa.timestamp("s", tz="UTC")),
    ]
)
# What every log extractor stores (cryo leaves out the block hash): the bench compares these.
_NOT_COMMON = ("block_hash", "block_timestamp", "transaction_index")
COMMON_COLUMNS = tuple(n for n in ROW_SCHEMA.names if n not in _NOT_COMMON)
_FIELDS = {
    "block_hash": "blockHash",
    "transaction_hash": "transactionHash",
    "address": "address",
    "data": "data",
}


def node_logs(
    url: str,
    start: int,
    end: int,
    addresses: Sequence[str] = (),
    topics: Sequence[Sequence[str] | None] = (),
    columns: Sequence[str] = ROW_SCHEMA.names,
) -> pa.Table:
    """The node's eth_getLogs answer for blocks start..end (optionally filtered), in row order."""
    rows: dict[str, list] = {name: [] for name in ROW_SCHEMA.names}
    with requests.Session() as session:
        for lo in range(start, end + 1, NODE_READ_BLOCKS):
            hi = min(end, lo + NODE_READ_BLOCKS - 1)
            logs = get_logs(session, url, lo, hi, addresses, topics)
            times = header_timestamps(session, url, {int(log["blockNumber"], 16) for log in logs})
            for log in logs:
                _append(rows, log, times)
    return pa.table(rows, schema=ROW_SCHEMA).select(list(columns)).sort_by(ROW_ORDER)


def get_logs(
    session: requests.Session,
    url: str,
    lo: int,
    hi: int,
    addresses: Sequence[str] = (),
    topics: Sequence[Sequence[str] | None] = (),
) -> list[dict]:
    """One plain eth_getLogs request; anything but a result raises RuntimeError."""
    params: dict = {"fromBlock": hex(lo), "toBlock": hex(hi)}
    if addresses:
        params["address"] = list(addresses)
    if topics:
        params["topics"] = [list(t) if t else None for t in topics]
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [params]}
    reply = session.post(url, data=orjson.dumps(body), headers=JSON_HEADERS, timeout=120)
    payload = orjson.loads(reply.content)
    if "result" not in payload:
        raise RuntimeError(f"eth_getLogs {lo}-{hi}: {payload}")
    return payload["result"]


def header_timestamps(session: requests.Session, url: str, blocks: set[int]) -> dict[int, int]:
    """Each block's timestamp from its header (one batch): the oracle for block_timestamp,
    whatever the logs themselves carry."""
    if not blocks:
        return {}
    calls = [
        {"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber", "params": [hex(b), False]}
        for i, b in enumerate(sorted(blocks))
    ]
    reply = session.post(url, data=orjson.dumps(calls), headers=JSON_HEADERS, timeout=120)
    headers = [answer["result"] for answer in orjson.loads(reply.content)]
    return {int(h["number"], 16): int(h["timestamp"], 16) for h in headers}


def _append(rows: dict[str, list], log: dict, times: dict[int, int]) -> None:
    rows["block_number"].append(int(log["blockNumber"], 16))
    rows["block_timestamp"].append(times[int(log["blockNumber"], 16)])
    rows["log_index"].append(int(log["logIndex"], 16))
    rows["transaction_index"].append(int(log["transactionIndex"], 16))
    for column, key in _FIELDS.items():
        rows[column].append(bytes.fromhex(log[key][2:]))
    topics = log["topics"]
    for i in range(4):
        rows[f"topic{i}"].append(bytes.fromhex(topics[i][2:]) if i < len(topics) else None)


def stored_logs(
    folder: Path | str,
    columns: Sequence[str] = ROW_SCHEMA.names,
    filesystem: pafs.FileSystem | None = None,
) -> pa.Table:
    """Every row of every visible Parquet file under `folder` (duplicates kept), in row order;
    `--hex` strings are read back as bytes so that both formats compare with the node. With a
    `filesystem` (an object store's), `folder` is a path in it ("bucket/prefix/logs")."""
    if filesystem is None:
        found = (p for p in Path(folder).rglob("*.parquet") if not p.name.startswith("."))
        files = sorted(str(p) for p in found)
    else:
        selector = pafs.FileSelector(str(folder), recursive=True, allow_not_found=True)
        infos = filesystem.get_file_info(selector)
        files = sorted(i.path for i in infos if i.extension == "parquet" and i.base_name[0] != ".")
    schema = pa.schema([ROW_SCHEMA.field(name) for name in columns])
    if not files:
        return schema.empty_table()
    dataset = ds.dataset(files, format="parquet", filesystem=filesystem)
    table = dataset.to_table(columns=list(columns))
    arrays = [_as_bytes(table[name]) if pa.types.is_string(table[name].type) else table[name]
              for name in columns]  # fmt: skip
    return pa.table(arrays, names=list(columns)).cast(schema).sort_by(ROW_ORDER)


def _as_bytes(column: pa.ChunkedArray) -> pa.Array:
    return pa.array(
        [None if v is None else bytes.fromhex(v[2:]) for v in column.to_pylist()], pa.binary()
    )


def compare(expected: pa.Table, stored: pa.Table) -> str:
    """ "yes" when the stored rows are exactly the node's, else a few words on what differs."""
    if stored.num_rows != expected.num_rows:
        return f"NO: {stored.num_rows:,} rows, node has {expected.num_rows:,}"
    if stored.equals(expected):
        return "yes"
    keys = ["block_number", "log_index"]
    same_keys = all(pc.all(pc.equal(stored[k], expected[k])).as_py() for k in keys)
    return "NO: same keys, other values" if same_keys else "NO: different (block, log) keys"
