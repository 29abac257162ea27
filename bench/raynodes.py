"""--engine ray on a local cluster of 1 and 2 nodes: `python -m bench.raynodes` (--help).

Both "clusters" run on this one machine (LocalRayCluster: a head, and a worker node), so a
second node adds no CPU: what the figure shows is the engine's own cost (actors, the object
store, tables crossing nodes) against the multiprocessing engine on the same endpoints, and that
throughput grows with the endpoints the nodes carry. Endpoints are fault proxies with a fixed
latency in front of one seeded anvil (a provider-bound run); every run's rows are checked
against the node's before its speed is reported.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from pipeline.config.settings import build_config
from pipeline.dev.devnet import Anvil, find_anvil
from pipeline.dev.raycluster import TEST_ENV, LocalRayCluster
from pipeline.dev.seeding import seed_logs
from pipeline.dev.simulator import FaultProxy, Profile
from pipeline.dev.verify import compare, node_logs, stored_logs
from pipeline.messages import TaskWritten
from pipeline.run.api import run_backfill
from pipeline.store.layout import LOGS_DIR


def main() -> None:
    """Seed anvil, then run each engine and cluster size over the same proxies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--logs", type=int, default=20_000)
    parser.add_argument("--chunk-size", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--endpoints", default="2,4", help="endpoint counts, comma-separated")
    args = parser.parse_args()
    os.environ.update(TEST_ENV)
    counts = [int(n) for n in args.endpoints.split(",")]
    with Anvil(find_anvil()) as anvil, tempfile.TemporaryDirectory() as tmp:
        seeded = seed_logs(anvil.url, blocks=args.blocks, logs=args.logs, seed=1)
        expected = node_logs(anvil.url, seeded.first_block, seeded.last_block, (), ())
        low, high = args.latency_ms * 0.95, args.latency_ms * 1.05
        proxies = [
            FaultProxy(anvil.url, Profile(latency_ms=(low, high))).start()
            for _ in range(max(counts))
        ]
        rows = []
        try:
            run = _runner(seeded, proxies, args.chunk_size, expected, Path(tmp))
            for count in counts:
                rows.append(("multiprocessing", "-", count, *run(count, None)))
            for nodes in (1, 2):
                with LocalRayCluster(nodes=nodes, cpus=1) as cluster:
                    for count in counts:
                        rows.append(("ray", nodes, count, *run(count, cluster.address)))
        finally:
            for proxy in proxies:
                proxy.stop()
    logs = expected.num_rows
    print(
        f"{logs} logs over {args.blocks} blocks, {args.chunk_size} blocks per request, "
        f"endpoints of {args.latency_ms:.0f} ms; {os.cpu_count()} cores"
    )
    print("| engine | nodes | endpoints | wall s | logs/s, wall | fetch s | logs/s, fetch | rows |")
    print("|---|---|---|---|---|---|---|---|")
    for engine, nodes, count, wall, fetch in rows:
        print(
            f"| {engine} | {nodes} | {count} | {wall:.1f} | {logs / wall:,.0f} | "
            f"{fetch:.1f} | {logs / fetch:,.0f} | equal |"
        )


def _runner(seeded, proxies, chunk_size, expected, tmp):
    def run(count: int, address: str | None) -> tuple[float, float]:
        written: list[float] = []
        out = tmp / f"{address or 'mp'}-{count}"
        config = build_config(
            rpc=[f"p{i}={p.url}" for i, p in enumerate(proxies[:count])],
            from_block=seeded.first_block,
            to_block=seeded.last_block,
            chunk_size=chunk_size,
            output=out,
            engine="ray" if address else "multiprocessing",
            ray_address=address,
        )
        started = time.monotonic()
        report = lambda e: written.append(time.monotonic()) if isinstance(e, TaskWritten) else None  # noqa: E731
        result = run_backfill(config, report=report)
        wall = time.monotonic() - started
        assert result.exit_code == 0, result.message
        same = compare(expected, stored_logs(out / LOGS_DIR))
        assert same == "yes", f"{out}: {same}"
        return wall, written[-1] - written[0]

    return run


if __name__ == "__main__":
    main()
