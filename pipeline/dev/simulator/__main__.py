"""`python -m pipeline.dev.simulator --upstream URL --profile NAME`: one proxy in the
foreground; `--list` lists the profiles."""

from __future__ import annotations

import argparse
import contextlib
import threading

from pipeline.dev.providers import PROFILES
from pipeline.dev.simulator.proxy import FaultProxy


def main(argv: list[str] | None = None) -> None:
    """Run one proxy in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Fault-injecting JSON-RPC proxy.")
    parser.add_argument("--upstream", help="JSON-RPC URL of the real node")
    parser.add_argument("--profile", default="healthy", choices=sorted(PROFILES))
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--list", action="store_true", help="list the profiles and exit")
    args = parser.parse_args(argv)
    if args.list:
        width = max(map(len, PROFILES))
        for name, profile in PROFILES.items():
            print(f"{name:<{width}}  {profile.description}")
        return
    if not args.upstream:
        parser.error("--upstream is required")
    with FaultProxy(args.upstream, PROFILES[args.profile], port=args.port) as proxy:
        print(proxy.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
