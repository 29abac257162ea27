"""`pipeline demo`: a local anvil node behind simulated providers, then a backfill."""

from __future__ import annotations

import sys

import click

from pipeline.report.console import make_console


@click.command("demo")
@click.option(
    "--output",
    default="output/demo",
    show_default=True,
    metavar="DIR|URI",
    help="Output folder, or s3://BUCKET/PREFIX (replaced on every demo run).",
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
def command(
    output: str,
    logs: int,
    blocks: int,
    profiles: tuple[str, ...],
    chunk_size: int | None,
    list_profiles: bool,
) -> None:
    """Run offline: a local anvil node behind simulated providers, then a backfill."""
    # Dev tooling (anvil, the simulator) is imported here only: `pipeline backfill` never loads it.
    from pipeline.dev.demo import profile_list, run_demo
    from pipeline.store.uri import parse_output

    if list_profiles:
        click.echo(profile_list())
        return
    result = run_demo(
        parse_output(output),
        logs=logs,
        blocks=blocks,
        console=make_console(),
        profiles=profiles,
        chunk_size=chunk_size,
    )
    sys.exit(result.exit_code)
