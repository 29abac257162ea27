"""The option registry: the command line, the config file's keys and build_config's checks and
defaults all come from the one list in pipeline.config.options."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import assert_usage_error, run_cli_in_process

from pipeline.cli import backfill, cli
from pipeline.config.options import FILE_OPTIONS, OPTIONS, Option, grouped
from pipeline.config.settings import BackfillConfig, build_config
from pipeline.config.tomlfile import load_config_file
from pipeline.errors import ConfigError

RPC = ["http://127.0.0.1:1"]
# One TOML value of each kind a config file can hold, and what tomllib reads it as.
TOML_SAMPLES: list[tuple[str, Any]] = [
    ("true", True),
    ("7", 7),
    ("2.5", 2.5),
    ('"x"', "x"),
    ('["x"]', ["x"]),
]
# The top-level keys --config accepted before the registry existed: none may go missing.
FILE_KEYS_BEFORE = {
    "rpc", "address", "topic0", "topic1", "topic2", "topic3", "from_block", "to_block",
    "chunk_size", "max_attempts", "concurrency", "output", "hex", "overwrite", "quiet",
    "timeout", "stall_timeout", "rps", "confirmations", "file_blocks",
}  # fmt: skip


def squeezed(text: str) -> str:
    """`text` without whitespace, so that help wrapped at any width still compares."""
    return "".join(text.split())


def backfill_help() -> str:
    result = CliRunner().invoke(cli, ["backfill", "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "backfill.toml"
    path.write_text(text)
    return path


def accepts(option: Option, kind: type) -> bool:
    # A TOML boolean is a Python int too: it is only welcome where bool is named.
    if kind is bool:
        return bool in option.toml_types
    return kind in option.toml_types


def bounds_outside(option: Option) -> list[Any]:
    """Values just beyond each of the option's bounds."""
    values = []
    if option.positive:
        values.append(0)
    if option.at_least is not None:
        values.append(option.at_least - 1)
    if option.at_most is not None:
        values.append(option.at_most + 1)
    return values


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_every_registry_option_is_in_backfill_help_with_its_text_and_default(option):
    text = squeezed(backfill_help())
    assert option.flag in text
    assert squeezed(option.help) in text
    if option.short:
        assert f"{option.short},{option.flag}" in text
    if option.show_default:
        assert f"[default:{option.default}]" in text


def test_help_lists_the_options_in_registry_order():
    text = backfill_help()
    positions = [text.index(f"{o.flag} ") for o in OPTIONS]
    assert positions == sorted(positions)


def test_the_config_file_accepts_every_key_it_did_before_and_not_the_command_only_ones():
    assert set(FILE_OPTIONS) >= FILE_KEYS_BEFORE  # new keys are welcome, old ones stay
    assert not {"config", "verbose", "metrics_port", "metrics_host"} & set(FILE_OPTIONS)


@pytest.mark.parametrize("option", FILE_OPTIONS.values(), ids=lambda o: o.name)
@pytest.mark.parametrize("literal,value", TOML_SAMPLES, ids=[t for t, _ in TOML_SAMPLES])
def test_every_file_option_takes_its_own_types_and_refuses_others(tmp_path, option, literal, value):
    path = write_config(tmp_path, f"{option.name.replace('_', '-')} = {literal}\n")
    if not accepts(option, type(value)):
        with pytest.raises(
            ConfigError, match=f"{option.name.replace('_', '-')} has the wrong type"
        ):
            load_config_file(path)
        return
    run, _ = load_config_file(path)
    # Under the command's parameter name; one string for a repeatable option is a list of one.
    assert run == {option.dest: [value] if option.multiple and isinstance(value, str) else value}


@pytest.mark.parametrize("key", ["config", "verbose", "metrics-port", "metrics-host"])
def test_options_kept_out_of_the_file_are_unknown_keys(tmp_path, key):
    with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
        load_config_file(write_config(tmp_path, f"{key} = 1\n"))


def test_a_flag_on_the_command_line_beats_the_file_and_the_rest_of_the_file_applies(
    tmp_path, mocker
):
    run = mocker.patch.object(backfill, "start_preflight", side_effect=SystemExit(0))
    path = write_config(
        tmp_path,
        f'rpc = "{RPC[0]}"\naddress = "0x{"aa" * 20}"\nhex = true\ntimeout = 4\nquiet = true\n',
    )
    args = ["backfill", "--config", str(path), "--address", "0x" + "bb" * 20, "--timeout", "9"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    config = run.call_args.args[0]
    assert config.log_filter.addresses == ("0x" + "bb" * 20,)  # the flag replaces the list
    assert (config.timeout, config.hex_output) == (9.0, True)


def test_backfill_config_defaults_are_the_registry_defaults():
    explicit = {
        name
        for name, p in inspect.signature(build_config).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    defaults = {f.name: f.default for f in dataclasses.fields(BackfillConfig)}
    passed_on = [
        o for o in OPTIONS if not o.command_only and o.dest not in explicit and o.group is None
    ]
    assert passed_on, "build_config passes registry options on to BackfillConfig"
    for option in passed_on:  # each one is a BackfillConfig field, defaulting to the registry's
        assert defaults[option.dest] == option.default, option.name


def test_grouped_options_reach_build_config_as_one_sequence_in_registry_order():
    values = {"topic0": ("a",), "topic2": ("c",), "topic1": (), "topic3": (), "chunk_size": 5}
    assert grouped(values) == {"chunk_size": 5, "topics": (("a",), (), ("c",), ())}


def test_endpoint_limits_default_to_the_registry():
    endpoint = build_config(rpc=RPC).endpoints[0]
    assert endpoint.concurrency == next(o.default for o in OPTIONS if o.name == "concurrency")
    assert endpoint.rps == next(o.default for o in OPTIONS if o.name == "rps")


@pytest.mark.parametrize(
    "option,value",
    [(o, v) for o in OPTIONS if not o.command_only for v in bounds_outside(o)],
    ids=lambda x: x.name if isinstance(x, Option) else str(x),
)
def test_build_config_refuses_values_beyond_the_registry_bounds(option, value):
    with pytest.raises(ConfigError, match=f"^{option.flag} must be .*got {value}$"):
        build_config(rpc=RPC, **{option.dest: value})


@pytest.mark.parametrize(
    "option",
    [o for o in OPTIONS if not o.command_only and (o.at_least is not None or o.positive)],
    ids=lambda o: o.name,
)
def test_build_config_accepts_a_value_on_the_bound(option):
    value = option.at_least if option.at_least is not None else 0.5
    build_config(rpc=RPC, **{option.dest: value})


@pytest.mark.parametrize(
    "value,fragment",
    [("ten", "must be a number"), (True, "must be a number"), (2.5, "must be a whole number")],
)
def test_a_whole_number_option_refuses_other_values(value, fragment):
    with pytest.raises(ConfigError, match=f"--chunk-size {fragment}"):
        build_config(rpc=RPC, chunk_size=value)


def test_a_command_only_bound_is_checked_by_the_command_line(tmp_path):
    out = tmp_path / "out"
    refused = run_cli_in_process("backfill", "--metrics-port", "70000", "--output", str(out))
    assert "0<=x<=65535" in assert_usage_error(refused, out)
