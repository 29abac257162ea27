"""Command line: a thin shell over run_backfill() and the demo, one command per module."""

from __future__ import annotations

import sys

import click

from pipeline.cli import backfill, demo, status
from pipeline.errors import ConfigError, NoEndpointError

EXIT_USAGE = 2
EXIT_NO_ENDPOINT = 1
EXIT_INTERRUPTED = 130


@click.group()
def cli() -> None:
    """Backfill Ethereum event logs from many JSON-RPC endpoints into Parquet."""


cli.add_command(backfill.command)
cli.add_command(demo.command)
cli.add_command(status.command)


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
        sys.exit(EXIT_NO_ENDPOINT)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted before the backfill started; nothing was written", err=True)
        sys.exit(EXIT_INTERRUPTED)
