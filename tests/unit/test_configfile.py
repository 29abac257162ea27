"""The TOML config file: per-endpoint limits, run options, precedence and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_usage_error, run_cli_in_process

from pipeline import cli
from pipeline.cli import backfill
from pipeline.config.settings import build_config
from pipeline.config.tomlfile import load_config_file
from pipeline.errors import ConfigError

CONFIG = """
rps = 10
concurrency = 2
chunk-size = 500
from-block = 100
to-block = 200

[endpoints.paid]
url = "http://127.0.0.1:8545/v2/abcdef0123456789abcdef"
rps = 50
concurrency = 8
max-block-range = 2000

[endpoints.public-node]
url = "http://127.0.0.1:8546"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "backfill.toml"
    path.write_text(text)
    return path


def test_endpoints_from_the_file_get_their_own_limits_and_the_shared_defaults(tmp_path):
    options, endpoints = load_config_file(write(tmp_path, CONFIG))
    assert options == {
        "rps": 10,
        "concurrency": 2,
        "chunk_size": 500,
        "from_block": 100,
        "to_block": 200,
    }
    config = build_config(
        endpoint_settings=endpoints, rps=options["rps"], concurrency=options["concurrency"]
    )
    paid, public = config.endpoints
    assert (paid.name, paid.rps, paid.concurrency, paid.max_blocks) == ("paid", 50, 8, 2000)
    assert (public.name, public.rps, public.concurrency, public.max_blocks) == (
        "public-node",
        10,
        2,
        None,
    )
    assert "abcdef0123456789abcdef" not in paid.safe_url


def test_rpc_flags_replace_the_files_endpoints_but_keep_overrides_by_name(tmp_path):
    _, endpoints = load_config_file(write(tmp_path, CONFIG))
    config = build_config(
        rpc=["paid=http://127.0.0.1:9000", "http://127.0.0.1:9001"], endpoint_settings=endpoints
    )
    assert [(e.name, e.rps) for e in config.endpoints] == [("paid", 50), ("127.0.0.1:9001", None)]


def test_an_override_for_an_endpoint_that_does_not_exist_is_refused(tmp_path):
    _, endpoints = load_config_file(write(tmp_path, "[endpoints.paidd]\nrps = 5\n"))
    with pytest.raises(ConfigError, match=r"'paidd'.*no endpoint has that name"):
        build_config(rpc=["paid=http://127.0.0.1:9000"], endpoint_settings=endpoints)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("rps = ", "not valid TOML"),
        ("chunk-sise = 5", "unknown key 'chunk-sise'"),
        ("chunk-size = 'big'", "chunk-size has the wrong type"),
        ("overwrite = 1", "overwrite has the wrong type"),
        ("address = [1, 2]", "list of strings"),
        ("[endpoints.a]\nurl = 'http://127.0.0.1:1'\nspeed = 3", "unknown key 'speed'"),
        ("endpoints = 3", "must be a table"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        load_config_file(write(tmp_path, text))


@pytest.mark.parametrize(
    "settings,fragment",
    [
        ({"rps": 0}, "--rps must be positive"),
        ({"concurrency": 0}, "--concurrency must be"),
        ({"max_block_range": 0}, "max-block-range must be at least 1"),
        ({"rps": "fast"}, "must be a number"),
    ],
)
def test_bad_endpoint_limits_are_refused(settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_config(endpoint_settings={"a": {"url": "http://127.0.0.1:1", **settings}})


def test_flags_on_the_command_line_win_over_the_file(tmp_path, mocker):
    run = mocker.patch.object(backfill, "start_preflight", side_effect=SystemExit(0))
    path = write(tmp_path, CONFIG)
    with pytest.raises(SystemExit):
        cli.main(["backfill", "--config", str(path), "--chunk-size", "50", "--rps", "3"])
    config = run.call_args.args[0]
    assert (config.chunk_size, config.from_block, config.to_block) == (50, 100, 200)
    assert [e.rps for e in config.endpoints] == [50, 3]  # the paid endpoint keeps its own


def test_a_bad_config_file_exits_2_with_one_line(tmp_path):
    path = write(tmp_path, "chunk-size = 'big'")
    out = tmp_path / "out"
    refused = run_cli_in_process("backfill", "--config", str(path), "--output", str(out))
    assert assert_usage_error(refused, out).startswith("error: --config")
