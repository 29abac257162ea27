"""`python -m pipeline backfill ...` is the same as the `pipeline` console script."""

import sys


def main() -> None:
    """Import the command line, then run it; Ctrl-C while the libraries load is a clean exit."""
    try:
        from pipeline.cli import main as cli_main
    except KeyboardInterrupt:
        print("interrupted before the backfill started; nothing was written", file=sys.stderr)
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
