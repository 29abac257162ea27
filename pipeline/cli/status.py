"""`pipeline status OUTPUT`: what an output folder holds."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("status")
@click.argument("output", type=click.Path(file_okay=False, path_type=Path))
def command(output: Path) -> None:
    """Show what an output folder holds: covered ranges, gaps, rows and files."""
    from pipeline.report.status import folder_status, format_status

    click.echo(format_status(output, folder_status(output)))
