"""block_timestamp in the raw logs: every stored row carries its block header's timestamp on the
node, whether the endpoint sends blockTimestamp in its logs, leaves it out, lies about it, or
refuses the JSON-RPC batches its headers are asked in; and it costs an honest endpoint almost no
request."""

from __future__ import annotations

import base64
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from conftest import backfill, node_rows
from helpers import assert_equals_node

from pipeline.dev.simulator import PROFILES, FaultProxy
from pipeline.fetch.convert import log_schema
from pipeline.fetch.timestamps import CHECK_EVERY
from pipeline.messages import Notice
from pipeline.store.layout import LOGS_DIR
from pipeline.verify.verifier import TAIL_BLOCKS

FIRST, LAST = 1, 600  # ~12,000 logs of the seeded node
CHUNK = 100
TIMESTAMP = pa.timestamp("s", tz="UTC")


def run(output: Path, proxy: FaultProxy, events: list | None = None, **kwargs):
    """Backfill FIRST..LAST (unless told otherwise) through `proxy` alone, without the checks:
    these tests count the timestamps' own header requests (test_verification.py counts the
    checks')."""
    report = events.append if events is not None else (lambda event: None)
    kwargs = {"chunk_size": CHUNK, "from_block": FIRST, "to_block": LAST, "verify": False, **kwargs}
    return backfill(output, [f"{proxy.profile.name}={proxy.url}"], report, **kwargs)


def node_timestamps(node, blocks: set[int]) -> dict[int, int]:
    """Each block's header timestamp, asked of the node itself."""
    ordered = sorted(blocks)
    headers = node.batch([("eth_getBlockByNumber", [hex(b), False]) for b in ordered])
    return {b: int(h["timestamp"], 16) for b, h in zip(ordered, headers, strict=True)}


def stored(output: Path, columns: tuple[str, ...] = ("block_number", "block_timestamp")):
    """The given columns of every final file (block_timestamp in seconds), in block order."""
    files = sorted(str(p) for p in (output / LOGS_DIR).glob("*.parquet"))
    table = ds.dataset(files, format="parquet").to_table(columns=list(columns))
    if "block_timestamp" in columns:
        at = table.schema.get_field_index("block_timestamp")
        seconds = table["block_timestamp"].cast(TIMESTAMP).cast(pa.int64())
        table = table.set_column(at, "block_timestamp", seconds)
    return table.sort_by("block_number")


def assert_timestamps_are_the_nodes(node, output: Path) -> int:
    """Every stored row's block_timestamp is its block header's on the node; the row count."""
    table = stored(output)
    assert table["block_timestamp"].null_count == 0
    pairs = set(zip(*(table[c].to_pylist() for c in table.column_names), strict=True))
    expected = node_timestamps(node, {block for block, _ in pairs})
    assert sorted(pairs) == sorted(expected.items())
    return table.num_rows


def header_requests(result, stats: dict) -> int:
    """The worker's requests besides eth_getLogs: its header requests (the summary counts every
    request of the worker; the proxy, each eth_getLogs call)."""
    return result.summary["endpoints"][0]["requests"] - stats["methods"]["eth_getLogs"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["healthy", "no-block-timestamp", "no-batches", "batches-of-2", "wrong-block-timestamp"],
)
@pytest.mark.slow
def test_every_row_has_its_block_headers_timestamp_whatever_the_endpoint_sends(
    node, seeded, proxy, tmp_path, name
):
    served = proxy(PROFILES[name])
    result = run(tmp_path, served)
    assert_equals_node(result, tmp_path, node, FIRST, LAST)
    rows = assert_timestamps_are_the_nodes(node, tmp_path)
    assert rows == len(node_rows(node, FIRST, LAST))
    stats = served.stats()
    if name != "healthy":  # the fault was served
        faults = stats["block_timestamps"]
        assert faults["stripped"] + faults["faked"] + faults["zeroed"] >= rows
    if PROFILES[name].batch_limit is not None:
        assert stats["refused_batches"] >= 1


@pytest.mark.parametrize("verify", [False, True], ids=["trusting", "checking"])
def test_headers_are_asked_only_for_blocks_with_logs_and_each_once(
    node, seeded, proxy, tmp_path, verify
):
    # One emitter's logs: blocks without any lie between those with some. With the checks on
    # and no other endpoint, they use the headers the worker read for the timestamps, and read
    # only the last blocks of each answer (TAIL_BLOCKS, where a truncated answer shows).
    address = seeded.contracts[2]
    served = proxy(PROFILES["no-block-timestamp"])
    result = run(tmp_path, served, addresses=[address], verify=verify)
    assert_equals_node(result, tmp_path, node, FIRST, LAST, addresses=[address])
    assert_timestamps_are_the_nodes(node, tmp_path)
    with_logs = {row[0] for row in node_rows(node, FIRST, LAST, addresses=[address])}
    assert 0 < len(with_logs) < LAST - FIRST + 1  # the test means something
    asked = served.stats()["header_blocks"]
    ends = [*range(CHUNK - 1, LAST, CHUNK), LAST]  # tasks are aligned to multiples of CHUNK
    tails = {end - i for end in ends for i in range(TAIL_BLOCKS)} if verify else set()
    # LAST is far below the head, where no reorg reaches: the end's hashes are not asked.
    assert with_logs <= set(asked) and set(asked) - with_logs <= tails
    assert all(asked[b] == 1 for b in with_logs)
    # Each call is counted in the proxy's methods too, batched or not.
    assert served.stats()["methods"]["eth_getBlockByNumber"] >= len(with_logs)


@pytest.mark.slow
def test_an_honest_endpoint_that_sends_timestamps_pays_one_check_in_fifty_answers(
    node, seeded, proxy, tmp_path
):
    served = proxy(PROFILES["healthy"])
    result = run(tmp_path, served, from_block=seeded.first_block, to_block=seeded.last_block,
                 chunk_size=25)  # fmt: skip
    assert_equals_node(result, tmp_path, node, seeded.first_block, seeded.last_block)
    assert_timestamps_are_the_nodes(node, tmp_path)
    stats = served.stats()
    answers = stats["methods"]["eth_getLogs"]
    extra = header_requests(result, stats)
    # The first answer, then one in CHECK_EVERY of those with logs: one header request each.
    assert answers >= 100 and 1 <= extra <= 1 + answers // CHECK_EVERY
    assert extra / answers <= 0.03
    print(f"\nhonest, sends blockTimestamp: {extra} header requests for {answers} eth_getLogs")


@pytest.mark.slow
def test_without_timestamps_the_headers_come_in_batches(node, seeded, proxy, tmp_path):
    served = proxy(PROFILES["no-block-timestamp"])
    result = run(tmp_path, served, from_block=seeded.first_block, to_block=seeded.last_block,
                 chunk_size=25)  # fmt: skip
    assert_equals_node(result, tmp_path, node, seeded.first_block, seeded.last_block)
    assert_timestamps_are_the_nodes(node, tmp_path)
    stats = served.stats()
    answers, extra = stats["methods"]["eth_getLogs"], header_requests(result, stats)
    blocks = set(stored(tmp_path)["block_number"].to_pylist())
    tasks_with_logs = {block // 25 for block in blocks}  # tasks start at multiples of 25
    assert extra == len(tasks_with_logs)  # <= 25 blocks with logs: one batch request a task
    assert stats["methods"]["eth_getBlockByNumber"] >= len(blocks)
    print(f"\nno blockTimestamp: {extra} header requests for {answers} eth_getLogs")


@pytest.mark.slow
def test_batches_are_learned_down_to_single_requests_where_none_is_taken(
    node, seeded, proxy, tmp_path
):
    served = proxy(PROFILES["no-batches"])
    result = run(tmp_path, served)
    assert_equals_node(result, tmp_path, node, FIRST, LAST)
    assert_timestamps_are_the_nodes(node, tmp_path)
    stats = served.stats()
    endpoint = result.summary["endpoints"][0]
    # Refused batches of 50, 25, 12, 6 and 3 calls (about), then plain requests: each refusal a
    # failed request of the endpoint, none a task's fault. (LAST is far below the head: the
    # run asks no batch of the end's hashes.)
    refused = stats["refused_batches"]
    assert 3 <= refused <= 8 and endpoint["failures"] == refused
    assert result.summary["failed_ranges"] == []
    blocks = set(stored(tmp_path)["block_number"].to_pylist())
    assert header_requests(result, stats) == len(blocks) + refused


@pytest.mark.slow
def test_a_lying_endpoint_is_caught_at_its_first_answer_and_never_believed_again(
    node, seeded, proxy, tmp_path
):
    events: list = []
    served = proxy(PROFILES["wrong-block-timestamp"])
    result = run(tmp_path, served, events)
    assert_equals_node(result, tmp_path, node, FIRST, LAST)
    assert_timestamps_are_the_nodes(node, tmp_path)
    notices = [e.text for e in events if isinstance(e, Notice) and "blockTimestamp" in e.text]
    assert len(notices) == 1 and "block headers" in notices[0]
    # From the first answer on, every block with logs has its header asked.
    blocks = set(stored(tmp_path)["block_number"].to_pylist())
    assert blocks <= set(served.stats()["header_blocks"])
    assert served.stats()["block_timestamps"]["faked"] > 0


def test_the_column_is_utc_seconds_that_duckdb_pandas_and_polars_read(
    node, seeded, proxy, tmp_path
):
    served = proxy(PROFILES["no-block-timestamp"])
    result = run(tmp_path, served, hex_output=True, to_block=200)
    assert_equals_node(result, tmp_path, node, FIRST, 200)
    files = sorted((tmp_path / LOGS_DIR).glob("*.parquet"))
    assert files
    for path in files:
        # Parquet has no unit of seconds: the file holds UTC milliseconds, and the Arrow schema
        # it keeps says what the tool wrote.
        kept = pq.ParquetFile(path).metadata.metadata[b"ARROW:schema"]
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(kept)))
        assert schema == log_schema(hex_output=True)
        assert schema.field("block_timestamp").type == TIMESTAMP
        assert schema.names.index("block_timestamp") == schema.names.index("block_number") + 1
        assert pq.read_schema(path).field("block_timestamp").type == pa.timestamp("ms", tz="UTC")
    glob = str(tmp_path / LOGS_DIR / "*.parquet")
    types = duckdb.sql(f"SELECT DISTINCT typeof(block_timestamp) FROM read_parquet('{glob}')")
    assert types.fetchall() == [("TIMESTAMP WITH TIME ZONE",)]
    seconds = duckdb.sql(
        f"SELECT block_number, epoch(block_timestamp)::BIGINT FROM read_parquet('{glob}')"
    ).fetchall()
    expected = node_timestamps(node, {b for b, _ in seconds})
    assert sorted(seconds) == sorted((b, expected[b]) for b, _ in seconds)
    polars = pytest.importorskip("polars")
    frame = polars.read_parquet(glob)
    assert str(frame.schema["block_timestamp"]) == "Datetime(time_unit='ms', time_zone='UTC')"
    pandas = pytest.importorskip("pandas")
    column = pandas.read_parquet(tmp_path / LOGS_DIR)["block_timestamp"]
    assert str(column.dt.tz) == "UTC" and column.notna().all()
