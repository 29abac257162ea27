"""The benchmark's comparison table, one row per contender."""

from __future__ import annotations

from bench.measure import Measurement
from pipeline.report.table import render_table

BUSY_MACHINE = 0.1  # others' CPU share above which the table carries a warning


def format_table(results: list[Measurement]) -> str:
    """The comparison table; scenario-specific columns come after the common ones."""
    fetch = any(r.fetch_s is not None for r in results)
    for r in results:
        if fetch:  # the fetch columns go first among the extras
            seen = r.fetch_s is not None
            r.extra = {
                "start-up s": _seconds(r.startup_s),
                "fetch s": f"{r.fetch_s:.2f}" if seen else "-",
                "shut-down s": _seconds(r.shutdown_s),
                "fetch logs/s": f"{r.fetch_rate:,.0f}" if seen else "-",
                **r.extra,
            }
    extras = list(dict.fromkeys(k for r in results for k in r.extra))
    head = ["contender", "wall s", "logs", "logs/s", "peak PSS MB", "CPU s", "helpers CPU s"]
    head += ["box CPU %", "others CPU %"]
    rows = [
        [
            r.name,
            f"{r.seconds:.2f}",
            f"{r.logs:,}",
            f"{r.logs_per_second:,.0f}",
            f"{r.peak_mb:,.0f}",
            f"{r.cpu_s:.1f}",
            f"{r.helper_cpu_s:.1f}",
            f"{100 * r.box_cpu:.0f}",
            f"{100 * r.others_cpu:.0f}",
            *(r.extra.get(k, "") for k in extras),
            r.verified,
        ]
        for r in results
    ]
    head += [*extras, "rows verified"]
    lines = render_table(head, rows, left=(0, len(head) - 1)).splitlines()
    busiest = max((r.others_cpu for r in results), default=0.0)
    if busiest > BUSY_MACHINE:
        lines.append(
            f"note: processes outside this benchmark used up to {busiest:.0%} of the machine "
            "during these runs (others CPU %): the affected figures are pessimistic"
        )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def add_ratio_to(results: list[Measurement], rival: Measurement | None, label: str) -> None:
    """A column of each row's logs/s divided by `rival`'s (cryo's), when it ran."""
    if rival is None or not rival.logs_per_second:
        return
    for r in results:
        r.extra[label] = f"{r.logs_per_second / rival.logs_per_second:.2f}x"
