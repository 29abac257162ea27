"""A Ray cluster of several nodes on this machine, for the tests and the throughput figure: a
head and worker nodes, each a `ray start --block` in its own process group, stopped by those
process ids (never `ray stop`, which would stop every cluster of this user)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START_TIMEOUT_S = 120.0
# The nodes', and the drivers' that join them: a loopback cluster without token authentication
# (Ray would otherwise create ~/.ray/auth_token), usage stats, or duplicate-log folding.
TEST_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0"}
# A lost node is noticed in about a second instead of Ray's default quarter of a minute.
FAST_HEALTH_CHECKS = {"health_check_period_ms": 300, "health_check_failure_threshold": 3}
OBJECT_STORE_BYTES = 200 * 1024 * 1024  # per node: the tests move a few MB at a time


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_command() -> list[str]:
    """`ray` of this interpreter's environment."""
    ray = Path(sys.executable).with_name("ray")
    if ray.exists():
        return [str(ray)]
    return [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]


class LocalRayCluster:
    """`nodes` Ray nodes (the first is the head) with `cpus` CPUs each; use as a context."""

    def __init__(self, nodes: int = 2, cpus: int = 1) -> None:
        self.nodes, self.cpus = nodes, cpus
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        # Short: Ray's unix sockets live under it, and their paths have a length limit.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))

    def __enter__(self) -> LocalRayCluster:
        try:
            self._start_node(head=True)
            self._wait(lambda: _listening(self.port), "the head node")
            for _ in range(self.nodes - 1):
                self._start_node(head=False)
            self._wait(self._all_alive, f"{self.nodes} nodes")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_node(self) -> tuple[subprocess.Popen, str]:
        """Start one more worker node and wait until the head counts it; its process and its
        Ray node id. (Call it while this process is not connected to Ray.)"""
        before = self._alive_ids()
        self._start_node(head=False)
        self.nodes += 1
        self._wait(self._all_alive, f"{self.nodes} nodes")
        (node,) = self._alive_ids() - before
        return self.processes[-1], node

    def _alive_ids(self) -> set[str]:
        import ray  # only the cluster's users have it

        ray.init(address=self.address, logging_level="error", log_to_driver=False)
        try:
            return {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        finally:
            ray.shutdown()

    def kill_node(self, process: subprocess.Popen) -> None:
        """SIGKILL one node's process group (as if its machine were lost), by its id."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        self.processes.remove(process)
        self.nodes -= 1

    def _all_alive(self) -> bool:
        import ray  # only the cluster's users have it

        ray.init(address=self.address, logging_level="error", log_to_driver=False)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while sum(node["Alive"] for node in ray.nodes()) < self.nodes:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.2)
            return True
        finally:
            ray.shutdown()

    def _start_node(self, head: bool) -> None:
        common = [
            f"--num-cpus={self.cpus}",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats",
            "--block",
        ]
        if head:
            role = [
                "--head",
                f"--port={self.port}",
                "--include-dashboard=false",
                f"--system-config={json.dumps(FAST_HEALTH_CHECKS)}",
                f"--temp-dir={self.temp_dir}",
            ]
        else:
            role = [f"--address={self.address}"]
        log = (self.temp_dir / f"node{len(self.processes)}.log").open("wb")
        env = dict(os.environ, **TEST_ENV)
        self.processes.append(
            subprocess.Popen(
                [*_ray_command(), "start", *role, *common],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a process group of its own: stopped whole by its id
            )
        )

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            dead = [p.args for p in self.processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "".join(
                    p.read_text(errors="replace")[-2000:] for p in self.temp_dir.glob("node*.log")
                )
                raise RuntimeError(f"the local Ray cluster did not start ({what}):\n{logs}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Kill every node's process group (ours, by id) and wait for them; delete the temp dir."""
        for process in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes:
            process.wait(timeout=30)
        self.processes.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
