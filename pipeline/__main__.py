"""`python -m pipeline backfill ...` is the same as the `pipeline` console script."""

from .cli import main

if __name__ == "__main__":
    main()
