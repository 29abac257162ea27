"""Command line: a thin shell over run_backfill() and the demo."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import click

from pipeline.config.settings import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONCURRENCY,
    DEFAULT_FILE_BLOCKS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_STALL_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    build_config,
)
from pipeline.config.tomlfile import load_config_file
from pipeline.errors import ConfigError
from pipeline.plan.preflight import NoEndpointError
from pipeline.report.console import make_console
from pipeline.report.summary import format_table
from pipeline.run.supervisor import Report, RunResult, run_backfill

EXIT_USAGE = 2


@click.group()
def cli() -> None:
    """Backfill Ethereum event logs from many JSON-RPC endpoints into Parquet."""


@cli.command()
@click.option(
    "--rpc",
    "rpc",
    multiple=True,
    metavar="[NAME=]URL",
    help="JSON-RPC endpoint, repeatable (default: $RPC_URLS, comma-separated, "
    "else three public Sepolia endpoints).",
)
@click.option("--from-block", default="0", show_default=True, help="First block.")
@click.option(
    "--to-block",
    default=None,
    help="Last block: a number, latest, latest-N, safe or finalized (default: finalized, or "
    "the head minus the chain's confirmation depth where no endpoint knows it).",
)
@click.option(
    "--confirmations",
    type=int,
    default=None,
    help="Stop this many blocks below the head (the same as --to-block latest-N).",
)
@click.option(
    "--address", multiple=True, help="Contract address, repeatable (default: $CONTRACT_ADDRESS)."
)
@click.option(
    "--topic0",
    multiple=True,
    help="Event signature topic, repeatable, ORed (default: $EVENT_TOPIC).",
)
@click.option("--topic1", multiple=True, help="Topic 1 values, ORed.")
@click.option("--topic2", multiple=True, help="Topic 2 values, ORed.")
@click.option("--topic3", multiple=True, help="Topic 3 values, ORed.")
@click.option(
    "--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, show_default=True, help="Blocks per task."
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("output"),
    show_default=True,
    help="Output folder.",
)
@click.option(
    "--max-attempts",
    type=int,
    default=DEFAULT_MAX_ATTEMPTS,
    show_default=True,
    help="Attempts per task, across all endpoints, before it is reported as failed.",
)
@click.option(
    "--hex", "hex_output", is_flag=True, help="Write 0x hex strings instead of raw bytes."
)
@click.option(
    "--timeout",
    type=float,
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds before one request is given up.",
)
@click.option(
    "--stall-timeout",
    type=float,
    default=DEFAULT_STALL_TIMEOUT_S,
    show_default=True,
    help="End the run when every endpoint has failed for this many seconds.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start over: delete what an earlier run left in --output (by default a run resumes).",
)
@click.option(
    "--file-blocks",
    type=int,
    default=DEFAULT_FILE_BLOCKS,
    show_default=True,
    help="Final files never span a multiple of this many blocks.",
)
@click.option(
    "--concurrency",
    type=int,
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight at once per endpoint.",
)
@click.option(
    "--rps",
    type=float,
    default=None,
    help="Requests per second per endpoint at most (default: as fast as each answers; "
    "lowered automatically when an endpoint throttles).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML file with options and per-endpoint settings ([endpoints.NAME] url, rps, "
    "concurrency, max-block-range); flags given here win.",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress display or per-task lines: warnings and the verdict only.",
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Also every failed request, with its error class and "
    "what was done about it (and per-task lines on a terminal).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics on this port while the run goes on.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the metrics server binds to.",
)
@click.pass_context
def backfill(ctx: click.Context, config_file: Path | None, **values) -> None:
    """Fetch every matching log of a block range into Parquet files."""
    endpoint_settings: dict = {}
    if config_file is not None:
        from_file, endpoint_settings = load_config_file(config_file)
        for key, value in from_file.items():
            if ctx.get_parameter_source(key) is click.core.ParameterSource.DEFAULT:
                values[key] = value
    quiet, verbose = values.pop("quiet"), values.pop("verbose")
    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose contradict each other: choose one")
    metrics_port, metrics_host = values.pop("metrics_port"), values.pop("metrics_host")
    config = build_config(
        rpc=values.pop("rpc"),
        from_block=values.pop("from_block"),
        to_block=values.pop("to_block"),
        confirmations=values.pop("confirmations"),
        addresses=values.pop("address"),
        topics=tuple(values.pop(f"topic{i}") for i in range(4)),
        env=os.environ,
        endpoint_settings=endpoint_settings,
        **values,
    )
    with contextlib.ExitStack() as stack:
        reports: list[Report] = [stack.enter_context(make_console(quiet, verbose))]
        if metrics_port is not None:
            from pipeline.report.metrics import Metrics, MetricsServer

            server = stack.enter_context(MetricsServer(Metrics(), metrics_port, metrics_host))
            reports.append(server.metrics)
        result = run_backfill(config, report=fan_out(reports))
    print_result(result, quiet)
    sys.exit(result.exit_code)


@cli.command()
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("output/demo"),
    show_default=True,
    help="Output folder (replaced on every demo run).",
)
@click.option("--logs", type=int, default=200_000, show_default=True, help="Logs to seed.")
@click.option("--blocks", type=int, default=5_000, show_default=True, help="Blocks to seed.")
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    metavar="NAME",
    help="Simulated provider behaviour, repeatable: one endpoint per profile (default: fast, "
    "medium, slow-flaky). Add --profile healthy to mix in a well-behaved endpoint.",
)
@click.option(
    "--chunk-size",
    type=int,
    default=None,
    help="Blocks per task (default: 50, or 500 with --profile so that caps bite).",
)
@click.option("--list-profiles", is_flag=True, help="List the provider profiles and exit.")
def demo(
    output: Path,
    logs: int,
    blocks: int,
    profiles: tuple[str, ...],
    chunk_size: int | None,
    list_profiles: bool,
) -> None:
    """Run offline: a local anvil node behind simulated providers, then a backfill."""
    from pipeline.dev.demo import profile_list, run_demo

    if list_profiles:
        click.echo(profile_list())
        return
    result = run_demo(
        output,
        logs=logs,
        blocks=blocks,
        console=make_console(),
        profiles=profiles,
        chunk_size=chunk_size,
    )
    sys.exit(result.exit_code)


@cli.command()
@click.argument("output", type=click.Path(file_okay=False, path_type=Path))
def status(output: Path) -> None:
    """Show what an output folder holds: covered ranges, gaps, rows and files."""
    from pipeline.report.status import folder_status, format_status

    click.echo(format_status(output, folder_status(output)))


def fan_out(reports: list[Report]) -> Report:
    """One report that hands every event to each of `reports`."""

    def report(event: object) -> None:
        for each in reports:
            each(event)

    return report


def print_result(result: RunResult, quiet: bool = False) -> None:
    """The per-endpoint table (unless quiet), then the verdict."""
    if not quiet:
        click.echo("")
        click.echo(format_table(result.summary["endpoints"]))
        click.echo("")
    click.echo(result.message, err=result.exit_code != 0)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every usage or input error is one line on stderr and exit code 2."""
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=args or ["--help"], prog_name="pipeline", standalone_mode=False)
    except (click.ClickException, ConfigError) as exc:
        text = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        click.echo(f"error: {' '.join(text.split())}", err=True)
        sys.exit(EXIT_USAGE)
    except NoEndpointError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted before the backfill started; nothing was written", err=True)
        sys.exit(130)
