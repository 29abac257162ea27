"""The end of a run on the terminal: the per-endpoint table, then the verdict."""

from __future__ import annotations

from typing import Protocol

import click

from pipeline.report.summary import format_table


class Verdict(Protocol):
    """What a finished run says (pipeline.run.api.RunResult): the run imports the reporting
    side, never the other way round."""

    exit_code: int
    summary: dict
    message: str


def print_result(result: Verdict, quiet: bool = False) -> None:
    """The per-endpoint table (unless quiet), then the verdict: on stderr when the run failed."""
    if not quiet:
        click.echo("")
        click.echo(format_table(result.summary["endpoints"]))
        click.echo("")
    click.echo(result.message, err=result.exit_code != 0)
