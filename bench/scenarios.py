"""The benchmark scenarios: cpu (straight from anvil), provider (three rate-capped simulated
providers, scheduling efficiency) and scaling (1..16 latency-bound endpoints).

Each scenario seeds its own anvil, runs every contender as a separate process tree
(bench.measure.run_measured) and returns the printed report.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from bench.measure import Measurement, machine_line, run_measured
from bench.report import add_ratio_to, format_table
from pipeline.dev.devnet import Anvil, find_anvil
from pipeline.dev.seeding import SeedReport, mine_empty, seed_logs
from pipeline.dev.simulator import FaultProxy, Outcome, Profile, Reply, RpcRequest
from pipeline.dev.verify import COMMON_COLUMNS, compare, node_logs, stored_logs
from pipeline.store.layout import LOGS_DIR

CPU_SAMPLE_S = 0.02  # memory can spike within a second when logs arrive at 200k/s
LATENCY_SAMPLE_S = 0.1  # latency-bound runs: a gentler sampler steals less CPU from the run
SEED = 11
# Empty blocks mined after the seeded ones: anvil's finalized block is 64 below its head, so the
# seeded range is then history, as a backfill's range is (its default end is the finalized
# block). Near the head an answer must prove its blocks, and the end is remembered by its hashes.
HISTORY_GAP = 64
# A folder holding another version of the `pipeline` package: its runs stand in for this one's.
OTHER_VERSION = "BENCH_PIPELINE"

# Size flags per scenario: flag -> argparse keywords. The defaults are the quick sizes that
# `all` runs (a few minutes on 2 cores).
FLAGS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {
        "logs": {"type": int, "default": 200_000, "help": "logs to seed"},
        "blocks": {"type": int, "default": 1_000, "help": "blocks to seed"},
        "chunk-size": {"type": int, "default": 20, "help": "blocks per request"},
        "concurrency": {"type": int, "default": 2, "help": "this tool's requests in flight"},
    },
    "provider": {
        "logs": {"type": int, "default": 30_000, "help": "logs to seed"},
        "blocks": {"type": int, "default": 3_000, "help": "blocks to seed"},
        "chunk-size": {"type": int, "default": 5, "help": "blocks per request"},
        "providers": {
            "choices": ("flat", "equal", "mixed"),
            "default": "flat",
            "help": "flat: three alike 60 ms, 15 rps; equal: three alike 50-150 ms, 20 rps; "
            "mixed: 50/100/150 ms, 25/15/10 rps",
        },
        "tuned": {
            "action": "store_true",
            "help": "also run all three with a hand-set --concurrency per provider",
        },
        "at-head": {
            "action": "store_true",
            "help": "end the range at the node's head, not at its finalized block: near the "
            "head each answer proves its blocks (header calls), and the end's hashes are kept",
        },
    },
    "fixed": {
        "runs": {"type": int, "default": 5, "help": "runs per contender"},
    },
    "scaling": {
        "endpoints": {"default": "1,2,4,8,16", "help": "endpoint counts, comma-separated"},
        "tasks": {"type": int, "default": 100, "help": "requests per endpoint (weak scaling)"},
        "chunk-size": {"type": int, "default": 5, "help": "blocks per request"},
        "logs-per-block": {"type": int, "default": 10, "help": "average logs per block"},
        "latency-ms": {"type": float, "default": 100.0, "help": "each endpoint's latency, +-5%%"},
        "concurrency": {"type": int, "default": 1, "help": "requests in flight per endpoint"},
    },
}


def add_arguments(scenario: str, parser: argparse.ArgumentParser, prefix: bool = False) -> None:
    """Add a scenario's size flags (as --SCENARIO-FLAG when `prefix`, for `all`)."""
    for flag, spec in FLAGS[scenario].items():
        name = f"--{scenario}-{flag}" if prefix else f"--{flag}"
        dest = f"{scenario}_{flag.replace('-', '_')}"
        if "action" in spec:  # an on/off switch: no value, no default worth showing
            parser.add_argument(name, dest=dest, **spec)
            continue
        metavar = "LIST" if flag == "endpoints" else None if "choices" in spec else "N"
        help_text = f"{spec['help']} (default: %(default)s)"
        parser.add_argument(name, dest=dest, metavar=metavar, **{**spec, "help": help_text})


def flags_epilog() -> str:
    """One line per scenario naming its size flags, for the top-level --help."""
    return "size flags:\n" + "\n".join(
        f"  {name}: " + " ".join(f"--{flag}" for flag in FLAGS[name]) for name in FLAGS
    )


# --- running contenders ---------------------------------------------------------------------


class TimedProxy(FaultProxy):
    """A FaultProxy that also notes when the first eth_getLogs arrived and the last one was
    answered: the fetch phase, without the contender's startup and shutdown."""

    def __init__(self, upstream: str, profile: Profile) -> None:
        super().__init__(upstream, profile)
        self.first: float | None = None
        self.last: float | None = None
        self._window = threading.Lock()

    def _handle(self, request: RpcRequest, forward: Callable[[bytes], Reply]) -> Outcome:
        # Overridden (rather than reading stats()) because request_times has no method names.
        logs = "eth_getLogs" in request.methods
        if logs:
            with self._window:
                self.first = self.first or time.monotonic()
        try:
            return super()._handle(request, forward)
        finally:
            if logs:
                with self._window:
                    self.last = time.monotonic()


def fetch_window(proxies: Sequence[TimedProxy]) -> float:
    """Seconds from the first eth_getLogs any proxy saw to the last one answered."""
    firsts = [p.first for p in proxies if p.first is not None]
    lasts = [p.last for p in proxies if p.last is not None]
    return max(lasts) - min(firsts) if firsts and lasts else 0.0


def contender(
    name: str,
    command: list[str],
    output: Path,
    expected: pa.Table,
    proxies: Sequence[TimedProxy] = (),
    period: float = LATENCY_SAMPLE_S,
) -> Measurement:
    """Run one contender, then compare its stored rows with the node's."""
    result = run_measured(name, command, period)
    stored = stored_logs(output, COMMON_COLUMNS)
    result.logs, result.verified = stored.num_rows, compare(expected, stored)
    if proxies:
        result.fetch_s = fetch_window(proxies)
        firsts = [p.first for p in proxies if p.first is not None]
        lasts = [p.last for p in proxies if p.last is not None]
        if firsts and lasts:
            result.startup_s = min(firsts) - result.started
            result.shutdown_s = result.ended - max(lasts)
        stats = [p.stats() for p in proxies]
        result.extra["requests"] = f"{sum(s['requests'] for s in stats):,}"
        if any(p.profile.rps_cap for p in proxies):
            result.extra["429s"] = str(sum(s["throttled"] for s in stats))
    return result


@dataclass(frozen=True)
class EndpointSetting:
    """One [endpoints.NAME] table of the TOML --config a user would write."""

    name: str
    url: str
    rps: float | None = None
    concurrency: int | None = None  # None: the tool's default

    def toml(self) -> str:
        """The table as TOML."""
        rps = f"rps = {self.rps:g}\n" if self.rps else ""
        concurrency = f"concurrency = {self.concurrency}\n" if self.concurrency else ""
        return f'[endpoints.{self.name}]\nurl = "{self.url}"\n{rps}{concurrency}'


def ours(
    settings: Sequence[EndpointSetting],
    start: int,
    end: int,
    chunk: int | None,
    work: Path,
    flags: Sequence[str] = (),
) -> tuple[list[str], Path]:
    """The CLI command for this tool over `settings` (written as a TOML --config), and the
    folder its logs land in; `chunk` None leaves the task size to the tool (adaptive);
    `flags`: more of the command's flags (--no-verify)."""
    label = "+".join(s.name for s in settings) + "".join(flags)
    config, output = work / f"{label}.toml", work / f"out-{label}"
    config.write_text("\n".join(s.toml() for s in settings))
    command = [sys.executable, "-m", "pipeline", "backfill", "--config", str(config)]
    if os.environ.get(OTHER_VERSION):  # another checkout of this tool, for before/after figures
        # From outside this checkout: `-m` would put the working folder first on the path.
        other = os.environ[OTHER_VERSION]
        command = ["env", "-C", str(work), f"PYTHONPATH={other}", *command]
    command += ["--from-block", str(start), "--to-block", str(end)]
    command += ["--chunk-size", str(chunk)] if chunk is not None else []
    command += ["--output", str(output), "--quiet", "--overwrite", *flags]
    return command, output / LOGS_DIR


def cryo(
    url: str, start: int, end: int, chunk: int, work: Path, **options: int
) -> tuple[list[str], Path]:
    """A cryo.freeze process over the range writing one file per `chunk` blocks; `options` are
    further cryo options such as requests_per_second or inner_request_size."""
    output = work / f"cryo-{len(list(work.glob('cryo-*')))}"
    output.mkdir(parents=True)
    extra = "".join(f", {key}={value!r}" for key, value in options.items())
    # os._exit once freeze() has returned: cryo 0.3.2 can abort in interpreter finalization
    # (PyGILState_Release from a leftover thread) after all its files are written.
    code = (
        f"import os, cryo; cryo.freeze('logs', rpc={url!r}, blocks=['{start}:{end + 1}'], "
        f"chunk_size={chunk}, output_dir={str(output)!r}{extra}); "
        "os._exit(0)"
    )
    return [sys.executable, "-c", code], output


def has_cryo() -> bool:
    """True when the cryo Python package is installed."""
    try:
        import cryo  # noqa: F401
    except ImportError:
        return False
    return True


NO_CRYO = "cryo: not installed, skipped (pip install cryo to include it)"
NO_VERIFY = "--no-verify"  # the answers' checks off: what they cost, beside the default run


def seed_history(url: str, blocks: int, logs: int, at_head: bool = False) -> SeedReport:
    """Seed the node, then (unless `at_head`) mine HISTORY_GAP empty blocks after the range."""
    seeded = seed_logs(url, blocks=blocks, logs=logs, seed=SEED)
    if not at_head:
        mine_empty(url, HISTORY_GAP)
    return seeded


# --- cpu ------------------------------------------------------------------------------------


def run_cpu(args: argparse.Namespace, work: Path) -> str:
    """CPU-bound: a seeded anvil with no latency; fetch-only ceiling, this tool, cryo."""
    logs, blocks, chunk = args.cpu_logs, args.cpu_blocks, args.cpu_chunk_size
    with Anvil(find_anvil()) as node:
        seeded = seed_history(node.url, blocks, logs)
        start, end = seeded.first_block, seeded.last_block
        expected = node_logs(node.url, start, end, columns=COMMON_COLUMNS)
        marker = work / "fetch-only.count"
        helper = [sys.executable, "-m", "bench", "fetch-only", node.url]
        ceiling = run_measured(
            "fetch-only loop (ceiling)",
            [*helper, str(start), str(end), str(chunk), str(marker)],
            CPU_SAMPLE_S,
        )
        ceiling.logs = int(marker.read_text())
        ceiling.verified = "count only: " + ("yes" if ceiling.logs == expected.num_rows else "NO")
        results = [ceiling]
        # Default flags first (no --chunk-size, no --concurrency): what a user gets.
        command, output = ours([EndpointSetting("default", node.url)], start, end, None, work)
        name = "pipeline, default flags"
        results.append(contender(name, command, output, expected, period=CPU_SAMPLE_S))
        # What the checks of the answers (on by default) cost.
        setting = EndpointSetting("default", node.url)
        command, output = ours([setting], start, end, None, work, [NO_VERIFY])
        name = f"pipeline, default flags but {NO_VERIFY}"
        results.append(contender(name, command, output, expected, period=CPU_SAMPLE_S))
        concurrency = args.cpu_concurrency
        for n in (1, 3):
            settings = [EndpointSetting(f"e{i}", node.url, None, concurrency) for i in range(n)]
            command, output = ours(settings, start, end, chunk, work)
            name = f"pipeline, {n} endpoint{'s' * (n > 1)}, tuned"
            results.append(contender(name, command, output, expected, period=CPU_SAMPLE_S))
        notes = []
        if has_cryo():
            # cryo as its users run it: its default of one eth_getLogs per block.
            command, output = cryo(node.url, start, end, chunk, work)
            results.append(contender("cryo", command, output, expected, period=CPU_SAMPLE_S))
            add_ratio_to(results, results[-1], "÷ cryo")
            notes.append(
                f"cryo: default settings (one eth_getLogs per block), files of {chunk} blocks"
            )
        else:
            notes.append(NO_CRYO)
    head = [
        f"== cpu: {seeded.logs:,} logs over {blocks:,} blocks, straight from anvil (no latency); "
        f"this tool with default flags (task sizes adaptive, 1 request in flight), then tuned: "
        f"--chunk-size {chunk} --concurrency {args.cpu_concurrency}; the fetch-only loop and "
        f"cryo's files take {chunk} blocks per request",
        machine_line(),
    ]
    return "\n".join([*head, format_table(results), *notes, ""])


# --- provider -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """A simulated hosted provider: latency range and requests-per-second cap."""

    name: str
    latency_ms: tuple[float, float]
    rps: int
    seed: int

    @property
    def concurrency(self) -> int:
        """What a user sets: enough requests in flight to use the whole cap even when every
        answer takes the slowest latency."""
        return math.ceil(self.rps * self.latency_ms[1] / 1000) + 1

    def profile(self) -> Profile:
        """The simulator profile: over the cap, HTTP 429 with Retry-After: 1."""
        return Profile(self.name, latency_ms=self.latency_ms, rps_cap=self.rps, seed=self.seed)

    def describe(self) -> str:
        """One line for the report."""
        low, high = self.latency_ms
        return f"{self.name}: {low:g}-{high:g} ms, cap {self.rps} rps"


PROVIDER_SETS: dict[str, tuple[Provider, ...]] = {
    "flat": tuple(Provider(f"p{i}", (57, 63), 15, seed=i) for i in (1, 2, 3)),
    "equal": tuple(Provider(f"p{i}", (50, 150), 20, seed=i) for i in (1, 2, 3)),
    "mixed": (
        Provider("fast", (40, 60), 25, seed=1),
        Provider("medium", (90, 110), 15, seed=2),
        Provider("slow", (140, 160), 10, seed=3),
    ),
}


def run_provider(args: argparse.Namespace, work: Path) -> str:
    """Three rate-capped providers: this tool on each alone, on all three, and cryo on the best
    one; scheduling efficiency = together ÷ the sum of alone."""
    providers = PROVIDER_SETS[args.provider_providers]
    logs, blocks, chunk = args.provider_logs, args.provider_blocks, args.provider_chunk_size
    with Anvil(find_anvil()) as node:
        seeded = seed_history(node.url, blocks, logs, args.provider_at_head)
        start, end = seeded.first_block, seeded.last_block
        expected = node_logs(node.url, start, end, columns=COMMON_COLUMNS)

        def run(
            chosen: Sequence[Provider], name: str, tuned: bool = False, flags: Sequence[str] = ()
        ) -> Measurement:
            # Default flags: only what a user knows of a provider, its cap (--rps) and the
            # task size under test; tuned: also the requests in flight.
            with contextlib.ExitStack() as stack:
                proxies = [stack.enter_context(TimedProxy(node.url, p.profile())) for p in chosen]
                settings = [
                    EndpointSetting(p.name, x.url, p.rps, p.concurrency if tuned else None)
                    for p, x in zip(chosen, proxies, strict=True)
                ]
                command, output = ours(settings, start, end, chunk, work, flags)
                return contender(name, command, output, expected, proxies)

        alone = [run([p], f"pipeline, {p.name} alone, default flags") for p in providers]
        together = run(providers, "pipeline, all three, default flags")
        # What the checks of the answers (on by default) cost, in requests and time.
        unchecked = run(providers, f"pipeline, all three, {NO_VERIFY}", flags=[NO_VERIFY])
        results = [*alone, together, unchecked]
        if args.provider_tuned:
            results.append(run(providers, "pipeline, all three, tuned --concurrency", True))
        best = providers[max(range(len(alone)), key=lambda i: alone[i].logs_per_second)]
        notes = []
        if has_cryo():
            with TimedProxy(node.url, best.profile()) as proxy:
                # Requests are what the cap counts: cryo makes the same ones as this tool.
                limits = {
                    "requests_per_second": best.rps,
                    "max_concurrent_requests": best.concurrency,
                    "inner_request_size": chunk,
                }
                command, output = cryo(proxy.url, start, end, chunk, work, **limits)
                results.append(
                    contender(f"cryo on {best.name}", command, output, expected, [proxy])
                )
            add_ratio_to(results, results[-1], "÷ cryo")
            notes.append(
                f"cryo gets {best.name} (the best provider alone), with requests_per_second="
                f"{best.rps}, max_concurrent_requests={best.concurrency}, "
                f"inner_request_size={chunk}"
            )
        else:
            notes.append(NO_CRYO)
    notes += _efficiency(alone, together, results[-1] if has_cryo() else None)
    head = [
        f"== provider ({args.provider_providers}): {seeded.logs:,} logs over {blocks:,} blocks, "
        f"{chunk} blocks per request (~{seeded.logs * chunk / blocks:.0f} logs on average), "
        + ("ending at the head" if args.provider_at_head else "ending at the finalized block"),
        machine_line(),
        "providers (simulated, in front of anvil; over the cap: HTTP 429, Retry-After: 1): "
        + "; ".join(p.describe() for p in providers),
        "our settings (TOML --config, per endpoint): rps = the provider's cap, --chunk-size "
        f"{chunk}, nothing else (default flags); tuned, with --provider-tuned: also "
        "concurrency = ceil(cap x slowest latency) + 1 = "
        + ", ".join(f"{p.name} {p.concurrency}" for p in providers),
    ]
    return "\n".join([*head, format_table(results), *notes, ""])


def _efficiency(
    alone: list[Measurement], together: Measurement, rival: Measurement | None
) -> list[str]:
    """The scheduling-efficiency lines: end to end (wall) and over the fetch phase."""
    lines = []
    rates: list[tuple[str, Callable[[Measurement], float]]] = [
        ("end to end (wall)", lambda m: m.logs_per_second),
        ("fetch phase", lambda m: m.fetch_rate),
    ]
    for label, rate in rates:
        total = sum(rate(a) for a in alone)
        lines.append(
            f"scheduling efficiency, {label}: {rate(together):,.0f} ÷ {total:,.0f} logs/s = "
            f"{rate(together) / total:.1%}"
            if total
            else f"{label}: -"
        )
        if rival is not None and rate(rival):
            lines.append(f"  all three ÷ cryo on one, {label}: {rate(together) / rate(rival):.2f}x")
    return lines


# --- fixed costs -----------------------------------------------------------------------------


def run_fixed(args: argparse.Namespace, work: Path) -> str:
    """Start-up (process start to the first eth_getLogs) and shut-down (last answer to exit) of
    a one-endpoint run over a small range, seen at a proxy in front of anvil."""
    with Anvil(find_anvil()) as node:
        seeded = seed_history(node.url, 200, 2_000)
        start, end = seeded.first_block, seeded.last_block
        expected = node_logs(node.url, start, end, columns=COMMON_COLUMNS)
        results = []
        for i in range(args.fixed_runs):
            with TimedProxy(node.url, Profile("plain")) as proxy:
                setting = EndpointSetting(f"run{i}", proxy.url)
                command, output = ours([setting], start, end, None, work)
                results.append(
                    contender(
                        f"pipeline, default flags #{i + 1}", command, output, expected, [proxy]
                    )
                )
        if has_cryo():
            for i in range(args.fixed_runs):
                with TimedProxy(node.url, Profile("plain")) as proxy:
                    command, output = cryo(proxy.url, start, end, 1000, work)
                    results.append(contender(f"cryo #{i + 1}", command, output, expected, [proxy]))
    notes = [
        _medians(results, "start-up", "startup_s"),
        _medians(results, "shut-down", "shutdown_s"),
    ]
    head = [
        f"== fixed costs: one endpoint, {seeded.logs:,} logs over 200 blocks, "
        f"{args.fixed_runs} runs each; start-up = process start to the first eth_getLogs, "
        "shut-down = the last answer to the process exit (target: <= 0.8 s each)",
        machine_line(),
    ]
    return "\n".join([*head, format_table(results), *notes, ""])


def _medians(results: list[Measurement], label: str, field: str) -> str:
    """One line: the median of a Measurement field per contender family."""
    parts = []
    for who in ("pipeline", "cryo"):
        values = [getattr(r, field) for r in results if r.name.startswith(who)]
        if values:
            parts.append(f"{who} {statistics.median(values):.2f} s")
    return f"median {label}: " + ", ".join(parts)


# --- scaling --------------------------------------------------------------------------------


def run_scaling(args: argparse.Namespace, work: Path) -> str:
    """N latency-bound endpoints, each given the same work (weak scaling): throughput with N
    against N x the throughput with one."""
    counts = sorted({int(n) for n in args.scaling_endpoints.split(",")})
    tasks, chunk = args.scaling_tasks, args.scaling_chunk_size
    latency, concurrency = args.scaling_latency_ms, args.scaling_concurrency
    blocks = tasks * chunk
    with Anvil(find_anvil()) as node:
        # Identical segments (one seed), one per endpoint: N endpoints get exactly N x the logs.
        segments = [
            seed_logs(node.url, blocks=blocks, logs=blocks * args.scaling_logs_per_block, seed=SEED)
            for _ in range(max(counts))
        ]
        start = segments[0].first_block
        everything = node_logs(node.url, start, segments[-1].last_block, columns=COMMON_COLUMNS)
        results = []
        for n in counts:
            end = segments[n - 1].last_block
            expected = everything.filter(pc.less_equal(everything["block_number"], end))
            profiles = [
                Profile(f"lat{i}", latency_ms=(0.95 * latency, 1.05 * latency), seed=i)
                for i in range(n)
            ]
            with contextlib.ExitStack() as stack:
                proxies = [stack.enter_context(TimedProxy(node.url, p)) for p in profiles]
                settings = [
                    EndpointSetting(p.name, x.url, concurrency=concurrency)
                    for p, x in zip(profiles, proxies, strict=True)
                ]
                command, output = ours(settings, start, end, chunk, work)
                name = f"pipeline, {n} endpoint{'s' * (n > 1)}"
                results.append(contender(name, command, output, expected, proxies))
    _add_ratios(results, counts)
    head = [
        f"== scaling: latency-bound endpoints ({latency:g} ms +-5%, no rate cap, concurrency "
        f"{concurrency}); each endpoint's share is {tasks} requests of {chunk} blocks "
        f"(~{args.scaling_logs_per_block * chunk} logs each), {segments[0].logs:,} logs",
        machine_line(),
        "ratio = logs/s with N ÷ (N x logs/s with 1); target >= 0.9",
    ]
    return "\n".join([*head, format_table(results), ""])


def _add_ratios(results: list[Measurement], counts: list[int]) -> None:
    """Fill the scaling-ratio columns, relative to the run with the fewest endpoints."""
    base, base_n = results[0], counts[0]
    rates: list[tuple[str, Callable[[Measurement], float]]] = [
        ("ratio wall", lambda m: m.logs_per_second),
        ("ratio fetch", lambda m: m.fetch_rate),
    ]
    for result, n in zip(results, counts, strict=True):
        for label, rate in rates:
            single = rate(base) / base_n
            result.extra[label] = f"{rate(result) / (n * single):.2f}" if single else "-"


SCENARIOS: dict[str, tuple[str, Callable[[argparse.Namespace, Path], str]]] = {
    "cpu": ("CPU-bound: logs straight from anvil, against a bare loop and cryo", run_cpu),
    "provider": (
        "three rate-capped simulated providers: scheduling efficiency, cryo",
        run_provider,
    ),
    "fixed": ("start-up and shut-down seconds of a small one-endpoint run", run_fixed),
    "scaling": ("1, 2, 4, 8, 16 latency-bound endpoints: scaling ratio", run_scaling),
}
