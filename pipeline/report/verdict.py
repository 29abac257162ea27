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
        if line := hash_coverage(result.summary["endpoints"]):
            click.echo(line)
    click.echo(result.message, err=result.exit_code != 0)


def hash_coverage(endpoints: list[dict]) -> str:
    """A line saying how many blocks' hashes the checks confirmed, when they left some out
    (within --rps, where they audit answers instead); empty when they confirmed every one."""
    confirmed = sum(e["hashes_confirmed"] for e in endpoints)
    left_out = sum(e["hashes_unconfirmed"] for e in endpoints)
    if not left_out:
        return ""
    return (
        f"block hashes confirmed against headers: {confirmed:,} of {confirmed + left_out:,} "
        "blocks with logs (within --rps the checks audit a share of the answers instead)"
    )
