"""The output folder after a crash at any instant: what a new run keeps, deletes and fetches."""

from __future__ import annotations

import pytest

from pipeline.config.settings import build_config
from pipeline.errors import ConfigError
from pipeline.fetch.convert import log_schema
from pipeline.plan.runplan import Plan
from pipeline.store.files import write_empty, write_fragment
from pipeline.store.layout import (
    LOGS_DIR,
    STAGING_DIR,
    fragment_path,
    incoming_path,
    log_file_path,
    temp_path,
)
from pipeline.store.locks import output_lock
from pipeline.store.manifest import Manifest, filter_json, load_manifest, save_manifest
from pipeline.store.resume import prepare_output

TOPIC = "0x" + "ab" * 32


def config(out, **options):
    return build_config(rpc=["http://127.0.0.1:1"], output=out, **options)


def plan(start=0, end=999, chain=1):
    return Plan(chain, start, end, (), {"127.0.0.1:1": end})


def folder(out, covered=(), files=(), fragments=(), **options):
    """A folder as a run left it: manifest coverage, final files and staged fragments."""
    cfg = config(out, **options)
    (out / LOGS_DIR).mkdir(parents=True)
    (out / STAGING_DIR).mkdir()
    manifest = Manifest(1, filter_json(cfg.log_filter), cfg.hex_output)
    empty = log_schema().empty_table()
    for start, end in covered:
        manifest.add(start, end, None, 0)
    for start, end in files:
        manifest.add(start, end, write_empty(log_schema(), out, start, end).name, 0)
    for start, end in fragments:
        write_fragment(empty, out, start, end)
    save_manifest(out, manifest)
    return cfg


def test_a_fresh_folder_gets_a_manifest_and_the_whole_range_to_fetch(tmp_path):
    resume = prepare_output(config(tmp_path), plan())
    assert resume.todo == ((0, 999),) and resume.staged == ()
    assert load_manifest(tmp_path).chain_id == 1


def test_covered_ranges_and_staged_fragments_are_not_fetched_again(tmp_path):
    cfg = folder(tmp_path, files=[(0, 99)], covered=[(100, 199)], fragments=[(300, 349)])
    resume = prepare_output(cfg, plan())
    assert resume.staged == ((300, 349),)
    assert resume.todo == ((200, 299), (350, 999))


def test_a_final_file_the_manifest_does_not_list_is_deleted_and_its_fragments_kept(tmp_path):
    cfg = folder(tmp_path, fragments=[(0, 49), (50, 99)])
    orphan = write_empty(log_schema(), tmp_path, 0, 99)  # compacted, the manifest not yet saved
    resume = prepare_output(cfg, plan())
    assert not orphan.exists()
    assert resume.staged == ((0, 49), (50, 99)) and resume.todo == ((100, 999),)


def test_fragments_the_manifest_already_covers_are_deleted(tmp_path):
    cfg = folder(tmp_path, files=[(0, 99)], fragments=[(0, 49), (50, 99)])
    resume = prepare_output(cfg, plan())
    assert resume.staged == () and not fragment_path(tmp_path, 0, 49).exists()
    assert log_file_path(tmp_path, 0, 99).exists()


def test_half_written_files_are_deleted(tmp_path):
    cfg = folder(tmp_path)
    leftovers = [temp_path(log_file_path(tmp_path, 0, 9)), temp_path(fragment_path(tmp_path, 0, 9))]
    for path in leftovers:
        path.write_bytes(b"PAR1 half")
    prepare_output(cfg, plan())
    assert not any(path.exists() for path in leftovers)


def test_a_listed_file_that_vanished_is_fetched_again(tmp_path):
    cfg = folder(tmp_path, files=[(0, 99), (100, 199)])
    log_file_path(tmp_path, 100, 199).unlink()
    resume = prepare_output(cfg, plan())
    assert resume.todo == ((100, 999),)
    assert any("missing" in note for note in resume.notes)


@pytest.mark.parametrize(
    "options,run_plan,fragment",
    [
        ({"topics": [[TOPIC]]}, plan(), "another filter"),
        ({"hex_output": True}, plan(), "same --hex"),
        ({}, plan(chain=5), "chain 1"),
    ],
)
def test_another_filter_chain_or_format_is_refused(tmp_path, options, run_plan, fragment):
    folder(tmp_path, files=[(0, 99)])
    with pytest.raises(ConfigError, match=fragment):
        prepare_output(config(tmp_path, **options), run_plan)
    resume = prepare_output(config(tmp_path, overwrite=True, **options), run_plan)
    assert resume.todo == ((0, 999),)


def test_log_files_without_a_manifest_or_a_broken_manifest_are_refused(tmp_path):
    (tmp_path / LOGS_DIR).mkdir()
    write_empty(log_schema(), tmp_path, 0, 9)
    with pytest.raises(ConfigError, match=r"no manifest\.json"):
        prepare_output(config(tmp_path), plan())
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        prepare_output(config(tmp_path), plan())


def test_a_second_run_into_a_folder_in_use_is_refused(tmp_path):
    with (
        output_lock(tmp_path),
        pytest.raises(ConfigError, match="another backfill"),
        output_lock(tmp_path),
    ):
        pass
    with output_lock(tmp_path):  # released with the first run
        pass


def test_a_new_run_waits_for_a_killed_runs_writer_to_stop(tmp_path, monkeypatch):
    import pipeline.store.locks as resume

    monkeypatch.setattr(resume, "ORPHAN_WRITER_WAIT_S", 0.3)
    with (
        resume.writer_lock(tmp_path),  # an orphaned writer still at work
        pytest.raises(ConfigError, match="writer process of an earlier run"),
        output_lock(tmp_path),
    ):
        pass
    with output_lock(tmp_path):  # it stopped: the run goes ahead
        pass


def test_results_no_writer_accepted_and_unreadable_fragments_are_fetched_again(tmp_path):
    cfg = folder(tmp_path, fragments=[(0, 49)])
    stray = incoming_path(tmp_path, 4242, 7)  # a worker's result the writer never accepted
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half a result")
    fragment_path(tmp_path, 50, 99).write_bytes(b"not an Arrow file")  # e.g. an older format
    resume = prepare_output(cfg, plan())
    assert resume.staged == ((0, 49),)
    assert resume.todo == ((50, 999),)
    assert not stray.exists() and stray.parent.is_dir()
    assert not fragment_path(tmp_path, 50, 99).exists()


def test_a_folder_written_before_block_timestamp_is_refused_and_left_as_it_was(tmp_path):
    cfg = folder(tmp_path, files=[(0, 99)])
    path = tmp_path / "manifest.json"
    old = path.read_text().replace('"version": 2', '"version": 1')
    path.write_text(old)
    with pytest.raises(ConfigError, match=r"older version.*--overwrite"):
        prepare_output(cfg, plan())
    assert path.read_text() == old and list((tmp_path / LOGS_DIR).iterdir())
    resume = prepare_output(config(tmp_path, overwrite=True), plan())
    assert resume.todo == ((0, 999),) and load_manifest(tmp_path).version == 2


def test_event_files_never_recorded_are_deleted_and_a_missing_one_refetches_its_window(tmp_path):
    events = ["Tick(uint256 a, uint256 b)"]
    cfg = config(tmp_path, events=events)
    prepare_output(cfg, plan())
    manifest = load_manifest(tmp_path)
    stray = tmp_path / "events" / "Tick" / "Tick__000000000000_to_000000000099.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half a compaction")
    recorded = tmp_path / "events" / "Tick" / "Tick__000000000100_to_000000000199.parquet"
    name = write_empty(log_schema(), tmp_path, 100, 199).name
    entry = {"Tick": {"file": recorded.name, "rows": 0, "decode_failures": 0, "examples": []}}
    manifest.add(100, 199, name, 0, entry)
    save_manifest(tmp_path, manifest)
    resume = prepare_output(cfg, plan())
    assert not stray.exists()
    assert resume.todo == ((0, 999),), "the window whose event file is missing is fetched again"
    assert not (tmp_path / LOGS_DIR / name).exists()
