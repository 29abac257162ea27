"""The one text-table renderer: the end-of-run table, `pipeline status` and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence


def render_table(
    header: Sequence[str], rows: Sequence[Sequence[object]], left: Sequence[int] = (0,)
) -> str:
    """Columns padded to their widest cell; the columns numbered in `left` align left (names,
    states), the others right (numbers). A left-aligned last column is not padded."""
    cells = [[str(c) for c in header], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    aligned = set(left)
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i in aligned else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    )
