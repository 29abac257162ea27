"""`pipeline backfill`: its options are generated from the registry in pipeline.config.options."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.config.options import OPTIONS, Option, grouped
from pipeline.config.settings import BackfillConfig, build_config
from pipeline.config.tomlfile import load_config_file
from pipeline.messages import Report
from pipeline.report.console import make_console
from pipeline.run.preflight import start_preflight

if TYPE_CHECKING:
    from concurrent.futures import Future

    from pipeline.plan.runplan import Plan
    from pipeline.run.api import RunResult

F = Callable[..., Any]


def registry_options(function: F) -> F:
    """Give `function` a click option for every registry entry, listed in registry order."""
    for option in reversed(OPTIONS):  # decorators apply bottom-up: the first one ends on top
        function = click.option(*_declarations(option), **_settings(option))(function)
    return function


def _declarations(option: Option) -> list[str]:
    short = [option.short] if option.short else []
    # A switch that is on by default is turned off with --no-NAME (click's on/off pair).
    flag = (
        f"{option.flag}/--no-{option.flag[2:]}"
        if option.is_flag and option.default
        else option.flag
    )
    return [flag, *short, option.dest]


def _settings(option: Option) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "help": option.help,
        "default": option.default,
        "show_default": option.show_default,
        "multiple": option.multiple,
        "metavar": option.metavar,
    }
    if option.is_flag:
        settings["is_flag"] = True
    else:
        settings["type"] = _click_type(option)
    return settings


def _click_type(option: Option) -> Any:
    if option.type is Path:
        return click.Path(
            file_okay=option.path != "dir", dir_okay=option.path != "file", path_type=Path
        )
    low, high = option.at_least, option.at_most
    # build_config checks the bounds of what it is given; the command's own options are checked
    # by click, which also shows the range in --help.
    if not option.command_only or (low is None and high is None and not option.positive):
        return option.type
    ranged = click.IntRange if option.type is int else click.FloatRange
    return ranged(0 if option.positive else low, high, min_open=option.positive)


@click.command("backfill")
@registry_options
@click.pass_context
def command(ctx: click.Context, config_file: Path | None, **values: Any) -> None:
    """Fetch every matching log of a block range into Parquet files."""
    endpoint_settings = {} if config_file is None else _with_file(ctx, config_file, values)
    own = {o.dest: values.pop(o.dest) for o in OPTIONS if o.command_only and o.dest in values}
    if own["quiet"] and own["verbose"]:
        raise click.UsageError("--quiet and --verbose contradict each other: choose one")
    config = build_config(env=os.environ, endpoint_settings=endpoint_settings, **grouped(values))
    # Asked first: the endpoints' round trips overlap the run's imports (pyarrow, numpy: ~0.3 s).
    preflight = start_preflight(config)
    result = _run(config, preflight, **own)
    from pipeline.report.verdict import print_result

    print_result(result, own["quiet"])
    sys.exit(result.exit_code)


def _with_file(ctx: click.Context, path: Path, values: dict[str, Any]) -> dict[str, Any]:
    """Take from the file at `path` every option the command line left at its default; return
    the file's per-endpoint settings."""
    from_file, endpoint_settings = load_config_file(path)
    for dest, value in from_file.items():
        if ctx.get_parameter_source(dest) is click.core.ParameterSource.DEFAULT:
            values[dest] = value
    return endpoint_settings


def _run(
    config: BackfillConfig,
    preflight: Future[Plan],
    quiet: bool,
    verbose: bool,
    metrics_port: int | None,
    metrics_host: str,
) -> RunResult:
    """The backfill, reported to the console and, with a metrics port, to Prometheus."""
    from pipeline.run.api import run_backfill  # the heavy imports, while the preflight asks

    with contextlib.ExitStack() as stack:
        reports: list[Report] = [stack.enter_context(make_console(quiet, verbose))]
        if metrics_port is not None:
            from pipeline.report.metrics import Metrics, MetricsServer

            server = stack.enter_context(MetricsServer(Metrics(), metrics_port, metrics_host))
            reports.append(server.metrics)
        return run_backfill(config, report=fan_out(reports), preflight=preflight)


def fan_out(reports: list[Report]) -> Report:
    """One report that hands every event to each of `reports`."""

    def report(event: object) -> None:
        for each in reports:
            each(event)

    return report
