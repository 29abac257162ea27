"""Decoded event tables against the node: eth_abi's decoding of the node's own logs is the oracle."""

from __future__ import annotations

import pyarrow.dataset as ds
import pytest
from conftest import backfill
from eth_abi import decode as abi_decode
from helpers import assert_equals_node, assert_usage_error, run_cli

from pipeline.decode.signature import EventSpec, parse_signature
from pipeline.dev.verify import get_logs
from pipeline.errors import ConfigError
from pipeline.store.layout import EVENTS_DIR, LOGS_DIR

FIRST, LAST = 1, 600
TRANSFER = "Transfer(address indexed from, address indexed to, uint256 value)"
TICK = "event Tick(uint256, uint256)"  # unnamed parameters: arg0, arg1
SWAP = "Swap(address indexed sender, uint256 indexed i, uint256 indexed x, uint256 amount)"
NFT_TRANSFER = "Transfer(address indexed from, address indexed to, uint256 indexed id)"


def expected_rows(node, spec: EventSpec) -> list[dict]:
    """eth_abi's decoding of the node's logs of `spec` (topic0 and topic count), in row order."""
    import requests

    with requests.Session() as session:
        logs = get_logs(session, node.url, FIRST, LAST, topics=[[spec.topic0]])
    rows = []
    for log in logs:
        if len(log["topics"]) != spec.topic_count:
            continue
        row = {"block_number": int(log["blockNumber"], 16), "log_index": int(log["logIndex"], 16)}
        topics = iter(log["topics"][1:])
        data = abi_decode([p.abi_type for p in spec.data_params], bytes.fromhex(log["data"][2:]))
        values = iter(data)
        for param in spec.params:
            if param.indexed:
                (value,) = abi_decode([param.abi_type], bytes.fromhex(next(topics)[2:]))
            else:
                value = next(values)
            row[param.name] = _as_stored(param.abi_type, value)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["block_number"], r["log_index"]))


def _as_stored(abi_type: str, value):
    if abi_type == "address":
        return bytes.fromhex(value[2:])
    if abi_type == "uint256":
        return str(value)
    return value


def stored_rows(out, folder: str, spec: EventSpec) -> list[dict]:
    table = ds.dataset(out / EVENTS_DIR / folder, format="parquet").to_table()
    columns = ["block_number", "log_index", *(p.name for p in spec.params)]
    rows = table.select(columns).to_pylist()
    return sorted(rows, key=lambda r: (r["block_number"], r["log_index"]))


def test_each_events_table_equals_eth_abis_decoding_of_the_nodes_logs(tmp_path, node, seeded):
    specs = [parse_signature(s) for s in (TRANSFER, TICK, SWAP)]
    result = backfill(
        tmp_path, [node.url], from_block=FIRST, to_block=LAST, chunk_size=50, file_blocks=200,
        events=[TRANSFER, TICK, SWAP],
    )  # fmt: skip
    topics = [[s.topic0 for s in specs]]
    assert_equals_node(result, tmp_path, node, FIRST, LAST, topics=topics)
    by_folder = {e["folder"]: e for e in result.summary["events"]}
    assert set(by_folder) == {"events/Transfer", "events/Tick", "events/Swap"}
    for spec in specs:
        expected = expected_rows(node, spec)
        assert expected, spec.name
        assert stored_rows(tmp_path, spec.name, spec) == expected
        entry = by_folder[f"events/{spec.name}"]
        assert (entry["rows"], entry["decode_failures"]) == (len(expected), 0)
        assert entry["signature"] == spec.signature and entry["name"] == spec.name
    # Each glob reads exactly one table: the raw logs' never picks up an event file.
    raw = ds.dataset(sorted((tmp_path / LOGS_DIR).glob("*.parquet")), format="parquet")
    assert "topic0" in raw.schema.names and raw.count_rows() == result.summary["stored_logs"]
    tick = ds.dataset(sorted((tmp_path / EVENTS_DIR / "Tick").glob("*.parquet")), format="parquet")
    assert {"arg0", "arg0_f64", "arg1", "arg1_f64"} <= set(tick.schema.names)
    # One event file beside every final file, named after the same window.
    for name in (p.name for p in (tmp_path / LOGS_DIR).glob("*.parquet")):
        window = name.removeprefix("logs__")
        assert (tmp_path / EVENTS_DIR / "Swap" / f"Swap__{window}").is_file()


@pytest.mark.slow
def test_same_selector_other_layout_gets_its_own_folder_and_nothing_is_dropped(
    tmp_path, node, seeded
):
    result = backfill(
        tmp_path, [node.url], from_block=FIRST, to_block=LAST, chunk_size=100,
        events=[TRANSFER, NFT_TRANSFER],
    )  # fmt: skip
    entries = {e["folder"]: e for e in result.summary["events"]}
    assert set(entries) == {"events/Transfer", "events/Transfer__4_topics"}
    erc20 = parse_signature(TRANSFER)
    assert entries["events/Transfer"]["rows"] == len(expected_rows(node, erc20))
    assert entries["events/Transfer__4_topics"]["rows"] == 0
    assert all(e["decode_failures"] == 0 for e in entries.values())


@pytest.mark.slow
def test_logs_that_do_not_fit_their_event_are_counted_and_stay_in_the_raw_logs(
    tmp_path, node, seeded
):
    wrong = "Transfer(address indexed from, address to, uint256 value)"  # 2 topics, logs have 3
    result = backfill(
        tmp_path, [node.url], from_block=FIRST, to_block=LAST, chunk_size=100, events=[wrong]
    )
    spec = parse_signature(wrong)
    assert_equals_node(result, tmp_path, node, FIRST, LAST, topics=[[spec.topic0]])
    (entry,) = result.summary["events"]
    assert entry["rows"] == 0 and entry["decode_failures"] == result.summary["stored_logs"] > 0
    example = entry["failure_examples"][0]
    assert {"block_number", "log_index", "transaction_hash", "reason"} <= set(example)


@pytest.mark.slow
def test_a_rerun_with_other_events_is_refused_and_the_same_events_resume(tmp_path, node, seeded):
    first = backfill(tmp_path, [node.url], from_block=FIRST, to_block=300, events=[TICK])
    assert first.exit_code == 0
    same_filter = [[parse_signature(TICK).topic0]]
    with pytest.raises(ConfigError, match="decodes other events"):
        backfill(tmp_path, [node.url], to_block=300, events=[SWAP], topics=same_filter)
    more = backfill(tmp_path, [node.url], from_block=FIRST, to_block=LAST, events=[TICK])
    assert more.exit_code == 0 and more.summary["already_stored_blocks"] == 300
    spec = parse_signature(TICK)
    assert stored_rows(tmp_path, "Tick", spec) == expected_rows(node, spec)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["--event", "Transfer(address from"],
        ["--event", "Transfer(uint257 value)"],
        ["--abi", "/nonexistent/abi.json"],
    ],
)
@pytest.mark.slow
def test_a_malformed_event_or_abi_exits_2_with_one_line_and_writes_nothing(tmp_path, node, args):
    out = tmp_path / "out"
    assert_usage_error(run_cli("backfill", "--rpc", node.url, *args, "--output", str(out)), out)


@pytest.mark.slow
def test_an_abi_file_decodes_every_event_it_declares(tmp_path, node, seeded):
    abi = tmp_path / "abi.json"
    abi.write_text(
        '[{"type":"event","name":"Tick","anonymous":false,"inputs":['
        '{"name":"a","type":"uint256","indexed":false},'
        '{"name":"b","type":"uint256","indexed":false}]},'
        '{"type":"function","name":"tick","inputs":[],"outputs":[]}]'
    )
    out = tmp_path / "out"
    done = run_cli(
        "backfill", "--rpc", node.url, "--from-block", str(FIRST), "--to-block", "200",
        "--abi", str(abi), "--output", str(out), "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    spec = parse_signature("Tick(uint256 a, uint256 b)")
    table = ds.dataset(out / EVENTS_DIR / "Tick", format="parquet").to_table()
    assert table.num_rows == len([r for r in expected_rows(node, spec) if r["block_number"] <= 200])
