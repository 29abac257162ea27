"""README promises best proved without a node: final files' row groups and size cap (with the
constants made small), the circuit breaker's schedule (on a fake clock), the reorg-safe end when
no endpoint knows a finalized block, and `demo --list-profiles` starting nothing."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config.settings import build_config
from pipeline.dev import demo, devnet
from pipeline.dev.simulator import PROFILES
from pipeline.fetch import health
from pipeline.fetch.convert import log_schema
from pipeline.fetch.health import CircuitBreaker
from pipeline.plan.chunks import Runs
from pipeline.plan.runplan import Probe
from pipeline.run import preflight
from pipeline.run.preflight import resolve_plan
from pipeline.store import files, staging
from pipeline.store.layout import LOGS_DIR, STAGING_DIR, fragment_path, parse_log_file_name
from pipeline.store.manifest import Manifest
from pipeline.store.staging import Staging


def block_logs(block: int, count: int) -> pa.Table:
    """`count` synthetic logs of one block, in log_index order."""
    schema = log_schema()
    word = b"\x11" * 32
    columns = {
        "block_number": [block] * count,
        "block_timestamp": [1_700_000_000 + 12 * block] * count,
        "block_hash": [word] * count,
        "transaction_index": [0] * count,
        "transaction_hash": [word] * count,
        "log_index": list(range(count)),
        "address": [b"\x22" * 20] * count,
        "topic0": [word] * count,
        "topic1": [None] * count,
        "topic2": [None] * count,
        "topic3": [None] * count,
        "data": [b""] * count,
        "chain_id": [1] * count,
    }
    return pa.table(columns, schema=schema)


def stage_blocks(out: Path, counts: list[int]) -> list[Path]:
    """One fragment per block 0, 1, 2 ... holding counts[block] logs; their paths."""
    (out / LOGS_DIR).mkdir(parents=True, exist_ok=True)
    (out / STAGING_DIR).mkdir(exist_ok=True)
    return [files.write_fragment(block_logs(b, n), out, b, b) for b, n in enumerate(counts)]


# --- final files: row groups and the size cap ----------------------------------------------------


def test_compaction_writes_full_row_groups_whatever_the_fragment_sizes(tmp_path, monkeypatch):
    assert files.ROW_GROUP_ROWS == 128 * 1024  # the README's 128k; made small below
    monkeypatch.setattr(files, "ROW_GROUP_ROWS", 1000)
    counts = [1, 999, 1500, 7, 3000, 494, 1]  # 6,002 rows: six full groups and one of 2
    sources = stage_blocks(tmp_path, counts)
    path = files.compact(sources, tmp_path, 0, len(counts) - 1)
    parquet = pq.ParquetFile(path)
    groups = [
        parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)
    ]
    assert groups == [1000] * 6 + [2]
    expected = pa.concat_tables(files.read_fragment(p) for p in sources)
    # Parquet has no unit of seconds: block_timestamp comes back in milliseconds, same instants.
    assert parquet.read().cast(expected.schema).equals(expected), "the rows, unchanged, in order"
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    # Statistics where they prune row groups, none where they cannot (hashes, topics 1-3, data).
    group, names = parquet.metadata.row_group(0), parquet.schema_arrow.names
    assert group.column(names.index("block_number")).statistics.has_min_max
    assert group.column(names.index("data")).statistics is None


def test_a_window_over_the_row_cap_is_cut_into_several_files(tmp_path, monkeypatch):
    assert staging.MAX_FILE_ROWS == 500_000  # the README's ~500k; made small below
    monkeypatch.setattr(staging, "MAX_FILE_ROWS", 250)
    counts = [100, 100, 100, 300, 100, 100]  # one fragment alone is over the cap
    stage_blocks(tmp_path, counts)
    manifest = Manifest(1, {"addresses": [], "topics": []}, hex_output=False)
    staged = tuple((b, b) for b in range(len(counts)))
    window = Staging(tmp_path, manifest, todo=(), staged=staged, file_blocks=1000)
    window.compact_all()
    made = sorted((parse_log_file_name(p.name), pq.ParquetFile(p).metadata.num_rows)
                  for p in (tmp_path / LOGS_DIR).glob("*.parquet"))  # fmt: skip
    # Cut before the cap would be passed; a fragment bigger than the cap stays whole.
    assert made == [((0, 1), 200), ((2, 2), 100), ((3, 3), 300), ((4, 5), 200)]
    assert manifest.covered == [(0, 5)] and manifest.rows == sum(counts)
    assert not [b for b in range(len(counts)) if fragment_path(tmp_path, b, b).exists()]


def fresh_window(tmp_path) -> tuple[Staging, Manifest]:
    """Staging for blocks 0-999 in one window, nothing staged yet; and its manifest."""
    stage_blocks(tmp_path, [])
    manifest = Manifest(1, {"addresses": [], "topics": []}, hex_output=False)
    return Staging(tmp_path, manifest, todo=((0, 999),), staged=(), file_blocks=1000), manifest


def add_block(window: Staging, tmp_path, block: int, rows: int) -> None:
    """A worker's result of one block with `rows` logs, staged."""
    result = tmp_path / f"result-{block}"
    files.write_result(block_logs(block, rows), result)
    window.add(result, block, block, rows, endpoint="a")


def test_a_contiguous_run_that_reaches_the_row_cap_is_compacted_before_its_window_is_done(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(staging, "MAX_FILE_ROWS", 250)
    window, manifest = fresh_window(tmp_path)

    def add(block: int, rows: int) -> None:
        add_block(window, tmp_path, block, rows)

    def final() -> list:
        return sorted((parse_log_file_name(p.name), pq.ParquetFile(p).metadata.num_rows)
                      for p in (tmp_path / LOGS_DIR).glob("*.parquet"))  # fmt: skip

    add(0, 100)
    add(2, 100)
    add(4, 200)
    assert final() == []  # no contiguous run holds the cap yet
    add(1, 100)  # blocks 0-2 now hold 300 rows: final, though 3 and 5-999 are still to come
    assert final() == [((0, 2), 300)]
    assert manifest.covered == [(0, 2)] and manifest.rows == 300
    assert [b for b in range(5) if fragment_path(tmp_path, b, b).exists()] == [4]
    add(3, 10)  # joins block 4, not the file before it: 210 rows stay staged
    assert final() == [((0, 2), 300)]
    window.compact_all()
    assert final() == [((0, 2), 300), ((3, 4), 210)]
    assert manifest.covered == [(0, 4)] and manifest.rows == 510


def test_runs_join_fragments_in_any_order_and_know_their_rows_and_fragments_at_once():
    runs = Runs()
    assert runs.add(10, 19, 5) == (10, 19, 5, 1)
    assert runs.add(30, 39, 7) == (30, 39, 7, 1)
    assert runs.add(20, 29, 1) == (10, 39, 13, 3)  # bridges the two
    assert runs.add(0, 9, 2) == (0, 39, 15, 4)
    runs.remove(0)  # compacted
    assert runs.add(40, 49, 3) == (40, 49, 3, 1)  # a run forgotten is not joined again
    assert Runs.of([(5, 5, 1), (3, 4, 1), (7, 7, 1)]).add(6, 6, 1) == (3, 7, 4, 4)


def test_a_run_of_many_small_fragments_is_compacted_before_its_window_is_done(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(staging, "MAX_RUN_FRAGMENTS", 4)
    window, manifest = fresh_window(tmp_path)
    for block in (0, 1, 3, 2):  # the fourth joins the three into one run of four
        add_block(window, tmp_path, block, 1)
        if block != 2:
            assert not list((tmp_path / LOGS_DIR).glob("*.parquet"))
    made = [parse_log_file_name(p.name) for p in (tmp_path / LOGS_DIR).glob("*.parquet")]
    assert made == [(0, 3)] and manifest.covered == [(0, 3)] and manifest.rows == 4
    assert not [b for b in range(4) if fragment_path(tmp_path, b, b).exists()]


# --- the circuit breaker -------------------------------------------------------------------------


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fail_until_open(breaker: CircuitBreaker, clock: FakeClock) -> int:
    """Record endpoint faults until the circuit opens; how many it took."""
    faults = 0
    while True:
        assert breaker.admit() == 0.0, "closed: requests flow"
        faults += 1
        if breaker.record_failure():
            return faults


def test_the_breaker_opens_after_5_faults_in_a_row_and_probes_after_10s_doubling_to_120s():
    assert (health.FAILURES_TO_OPEN, health.COOLDOWN_S, health.MAX_COOLDOWN_S) == (5, 10.0, 120.0)
    clock = FakeClock()
    breaker = CircuitBreaker(clock=clock)
    assert fail_until_open(breaker, clock) == 5
    cooldowns = []
    for _ in range(6):
        wait = breaker.admit()
        cooldowns.append(wait)
        clock.now += wait - 0.01
        assert breaker.admit() > 0, "still open just before the cool-down ends"
        clock.now += 0.01
        assert breaker.admit() == 0.0, "half-open: one probe goes"
        assert breaker.admit() > 0, "... and only one"
        assert breaker.record_failure(), "a failed probe opens it again"
    assert cooldowns == pytest.approx([10, 20, 40, 80, 120, 120])
    clock.now += breaker.admit()
    assert breaker.admit() == 0.0
    assert breaker.record_success(), "a successful probe closes it"
    assert breaker.state == health.CLOSED and breaker.admit() == 0.0
    assert fail_until_open(breaker, clock) == 5 and breaker.admit() == pytest.approx(10)


def test_the_breaker_counts_only_faults_in_a_row():
    breaker = CircuitBreaker(clock=FakeClock())
    for _ in range(3):
        for _ in range(4):
            assert not breaker.record_failure()
        breaker.record_success()  # a success in between: the count starts again
    assert breaker.state == health.CLOSED and breaker.admit() == 0.0


# --- the reorg-safe end --------------------------------------------------------------------------


@pytest.mark.parametrize("chain_id, depth", [(1, 64), (11155111, 64), (137, 256), (56, 20)])
def test_without_a_finalized_block_the_run_ends_the_chains_depth_below_the_head(
    tmp_path, monkeypatch, chain_id, depth
):
    asked = []

    def no_finalized(endpoint, tag, timeout):
        asked.append(tag)
        return Probe(endpoint, chain_id, 10_000, "unknown block tag", refused_tag=True)

    monkeypatch.setattr(preflight, "probe", no_finalized)
    plan = resolve_plan(build_config(rpc=["http://127.0.0.1:1"], output=tmp_path))
    assert asked == ["finalized"]
    assert plan.to_block == 10_000 - depth
    assert plan.end_reason == (
        f"the latest block 10000 minus {depth} confirmations (the reorg-safe default; "
        "no endpoint knows a finalized block)"
    )


def test_the_default_end_is_the_most_advanced_endpoints_finalized_block(tmp_path, monkeypatch):
    finalized = {"http://127.0.0.1:1": 900, "http://127.0.0.1:2": 950}

    def probe(endpoint, tag, timeout):
        return Probe(endpoint, 1, 1000, tag_block=finalized[endpoint.url])

    monkeypatch.setattr(preflight, "probe", probe)
    plan = resolve_plan(build_config(rpc=list(finalized), output=tmp_path))
    assert (plan.to_block, plan.end_reason) == (950, "the finalized block (the reorg-safe default)")


# --- demo --list-profiles ------------------------------------------------------------------------


def test_demo_list_profiles_prints_every_profile_and_starts_no_node(monkeypatch):
    def no_node(*args, **kwargs):
        raise AssertionError("--list-profiles must not start a node")

    monkeypatch.setattr(demo, "find_anvil", no_node)
    monkeypatch.setattr(demo, "Anvil", no_node)
    monkeypatch.setattr(devnet.Anvil, "start", no_node)
    result = CliRunner().invoke(cli, ["demo", "--list-profiles"])
    assert result.exit_code == 0, result.output
    listed = dict(line.split(maxsplit=1) for line in result.output.splitlines())
    assert listed == {name: p.description for name, p in PROFILES.items()}
