"""`python -m pipeline backfill ...` is the same as the `pipeline` console script."""

import os
import sys


def main() -> None:
    """Import the command line, then run it; Ctrl-C while the libraries load is a clean exit."""
    if sys.argv[1:2] == ["backfill"] and not {"--help", "-h"} & set(sys.argv):
        # The process server that starts the run's children imports pyarrow and requests for
        # them (~0.35 s): started first, it does so while this process imports the same.
        from pipeline.run.lifecycle import process_context

        process_context()
    try:
        from pipeline.cli import main as cli_main
    except KeyboardInterrupt:
        print("interrupted before the backfill started; nothing was written", file=sys.stderr)
        sys.exit(130)
    try:
        cli_main()
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            _exit_now(done.code or 0)
        raise
    _exit_now(0)


def _exit_now(code: int) -> None:
    """Leave without the interpreter's teardown. By now every file is written and fsynced, the
    children are joined and the output's lock is released; what is left is freeing pyarrow's and
    numpy's objects one by one, ~0.15 s for nothing."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
