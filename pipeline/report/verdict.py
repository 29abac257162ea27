"""The end of a run on the terminal: the per-endpoint table, then the verdict."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pipeline.report.summary import format_table

if TYPE_CHECKING:  # the run imports the report package, not the other way round
    from pipeline.run.api import RunResult


def print_result(result: RunResult, quiet: bool = False) -> None:
    """The per-endpoint table (unless quiet), then the verdict: on stderr when the run failed."""
    if not quiet:
        click.echo("")
        click.echo(format_table(result.summary["endpoints"]))
        click.echo("")
    click.echo(result.message, err=result.exit_code != 0)
