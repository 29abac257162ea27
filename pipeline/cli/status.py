"""`pipeline status OUTPUT`: what an output folder (or object-storage prefix) holds."""

from __future__ import annotations

import click


@click.command("status")
@click.argument("output", metavar="OUTPUT")
def command(output: str) -> None:
    """Show what an output folder or s3://BUCKET/PREFIX holds: covered ranges, gaps, rows
    and files."""
    from pipeline.report.status import folder_status, format_status
    from pipeline.store.access import open_checked
    from pipeline.store.uri import parse_output

    store = open_checked(parse_output(output))
    click.echo(format_status(store.uri, folder_status(store)))
