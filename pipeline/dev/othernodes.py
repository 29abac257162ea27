"""Node implementations other than anvil, for the tests: hardhat's node and ganache, installed
project-locally from npm like anvil, each on a loopback port. Their answers differ from anvil's
where it matters to a backfill: no blockTimestamp in logs, no eth_getBlockReceipts (each with its
own error), blocks sharing a timestamp, and "finalized" meaning the head."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Any

from pipeline.dev.devnet import (
    RpcConnection,
    die_with_parent,
    free_port,
    log_tail,
    npm_install,
    stop_process,
    tools_dir,
)
from pipeline.dev.seeding import GANACHE, HARDHAT, Dialect

# Blocks far larger than any seeded one: their base fee then falls, and a fixed price stays valid.
BLOCK_GAS_LIMIT = 10**12
MNEMONIC = "test test test test test test test test test test test junk"  # DEV_ACCOUNT first
HARDHAT_CONFIG = f"""module.exports = {{
  networks: {{ hardhat: {{ blockGasLimit: {BLOCK_GAS_LIMIT} }} }},
}};
"""


@dataclass(frozen=True)
class Implementation:
    """An npm package that runs a development node, and how to run it."""

    name: str
    package: str
    script: str  # the command-line entry point, under node_modules
    flags: tuple[str, ...]  # its arguments; "{port}" stands for the node's port
    dialect: Dialect

    def args(self, port: int) -> list[str]:
        """The entry point's arguments for a node on 127.0.0.1:`port`."""
        return [flag.format(port=port) for flag in self.flags]


IMPLEMENTATIONS = {
    i.name: i
    for i in (
        # Hardhat 3 needs Node.js 22; its 2.x line runs on Node.js 20 and is maintained.
        Implementation(
            "hardhat", "hardhat@2.29.1", "hardhat/internal/cli/bootstrap.js",
            ("node", "--hostname", "127.0.0.1", "--port", "{port}"), HARDHAT,
        ),
        Implementation(
            "ganache", "ganache@7.9.2", "ganache/dist/node/cli.js",
            ("--host", "127.0.0.1", "--port", "{port}", "--wallet.mnemonic", MNEMONIC,
             "--miner.blockGasLimit", hex(BLOCK_GAS_LIMIT), "--logging.quiet"),
            GANACHE,
        ),
    )
}  # fmt: skip


class OtherNode:
    """One hardhat or ganache node on a free loopback port; a context manager."""

    def __init__(self, name: str) -> None:
        self.implementation = IMPLEMENTATIONS[name]
        self.dialect = self.implementation.dialect
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._log: Any = None

    def start(self, timeout: float = 60) -> OtherNode:
        """Install the package if need be, spawn the node and return once it answers."""
        script = self._script()
        # Hardhat runs in a project folder (its config) below its own installation; ganache
        # needs none, and gets one too.
        self._folder = tempfile.TemporaryDirectory(
            prefix=f"{self.implementation.name}-", dir=tools_dir()
        )
        (Path(self._folder.name) / "hardhat.config.js").write_text(HARDHAT_CONFIG)
        self._log = tempfile.TemporaryFile(prefix=f"{self.implementation.name}-")  # noqa: SIM115
        self._proc = subprocess.Popen(
            ["node", str(script), *self.implementation.args(self.port)],
            cwd=self._folder.name,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),
        )
        client, deadline = RpcConnection(self.url), time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            with contextlib.suppress(OSError, HTTPException, RuntimeError):
                client.call("eth_chainId")
                return self
            time.sleep(0.1)
        tail = log_tail(self._log)
        self.stop()
        raise RuntimeError(f"{self.implementation.name} did not answer on {self.url}: {tail}")

    def _script(self) -> Path:
        tools, implementation = tools_dir(), self.implementation

        def installed(prefix: Path) -> Path | None:
            path = prefix / "node_modules" / implementation.script
            return path if path.is_file() else None

        return installed(tools) or npm_install(tools, implementation.package, installed)

    def stop(self) -> None:
        """Stop the node (terminate, then kill); safe to call more than once."""
        proc, self._proc = self._proc, None
        stop_process(proc)
        if self._log is not None:
            self._log.close()
        if self._folder is not None:
            self._folder.cleanup()
        self._log = self._folder = None

    def __enter__(self) -> OtherNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
