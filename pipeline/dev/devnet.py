"""A real local Ethereum node for tests and the demo: find or install anvil, run it, seed logs."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from http.client import HTTPConnection, HTTPException, RemoteDisconnected
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

ANVIL_PACKAGE = "@foundry-rs/anvil@1.7.1"
# The flag takes a u64; 10**15 fits the biggest seeded block and stays exact in a JSON double.
GAS_LIMIT = 10**15
_NPM_FLAGS = ["--no-audit", "--no-fund", "--loglevel=error"]
# --quiet: anvil's per-transaction log lines cost real time when seeding a million logs.
_ANVIL_FLAGS = (
    f"--host 127.0.0.1 --hardfork cancun --no-mining --gas-limit {GAS_LIMIT} "
    "--block-base-fee-per-gas 0 --quiet"
).split()


def find_anvil(install: bool = True) -> Path:
    """Path of the anvil binary: $ANVIL_BIN, else `anvil` on PATH, else the project-local install
    (installing it with npm when missing and install=True)."""
    if env := os.environ.get("ANVIL_BIN"):
        if not os.access(path := Path(env).expanduser(), os.X_OK) or not path.is_file():
            raise RuntimeError(f"ANVIL_BIN={env} is not an executable file")
        return path
    if on_path := shutil.which("anvil"):
        real = Path(on_path).resolve()
        # npm's `anvil` is a node wrapper; stopping it would orphan the real node behind it.
        if real.suffix != ".mjs":
            return real
        if found := _installed_binary(real.parents[3]):
            return found
    tools = tools_dir()
    if found := _installed_binary(tools):
        return found
    if not install:
        raise RuntimeError(f"anvil not found: set ANVIL_BIN, put anvil on PATH or install {tools}")
    return _npm_install(tools)


def tools_dir() -> Path:
    """Where the npm tools are installed: $PIPELINE_TOOLS_DIR, the checkout's .tools, or a cache."""
    if env := os.environ.get("PIPELINE_TOOLS_DIR"):
        return Path(env).expanduser()
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file():
        return root / ".tools"
    return Path.home() / ".cache" / "pipeline" / "tools"


def _installed_binary(prefix: Path) -> Path | None:
    scope = prefix / "node_modules" / "@foundry-rs"
    # The platform package holds the binary; the postinstall fallback puts it in anvil/ itself.
    candidates = [*sorted(scope.glob("anvil-*/bin/anvil")), scope / "anvil" / "anvil"]
    return next((p for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


def _npm_install(tools: Path) -> Path:
    return npm_install(tools, ANVIL_PACKAGE, _installed_binary, " or set ANVIL_BIN")


def npm_install(
    tools: Path, package: str, installed: Callable[[Path], Path | None], otherwise: str = ""
) -> Path:
    """Install the npm `package` into `tools` (once: parallel callers wait for the first) and
    return what `installed` finds there; raises RuntimeError when npm cannot (`otherwise`: what
    else the user may do, for the message)."""
    if (npm := shutil.which("npm")) is None:
        raise RuntimeError(
            f"{package} not found and npm is missing: install Node.js with npm "
            f"(e.g. apt-get install npm){otherwise}"
        )
    tools.mkdir(parents=True, exist_ok=True)
    # Parallel test workers may all get here: one installs, the others wait and reuse it.
    with open(tools / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if found := installed(tools):
            return found
        cmd = [npm, "install", "--prefix", str(tools), *_NPM_FLAGS, package]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if found := installed(tools):
            return found
    why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}, not installed"])[-1]
    raise RuntimeError(f"npm install {package} into {tools} failed: {why}")


class RpcConnection:
    """JSON-RPC over one keep-alive connection per thread; requests costs ~1 ms a call, this 0.2."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._host, self._port, self._path = parts.hostname, parts.port, parts.path or "/"
        self._local = threading.local()

    def _post(self, payload: Any) -> Any:
        body = orjson.dumps(payload)
        for attempt in range(2):
            # A connection is kept for the next call only if this exchange completes.
            conn, self._local.conn = getattr(self._local, "conn", None), None
            conn = conn or HTTPConnection(self._host, self._port, timeout=600)
            try:
                conn.request("POST", self._path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
            except (RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if attempt:  # the first failure may just be a keep-alive the server closed
                    raise
                continue
            self._local.conn = conn
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
            return orjson.loads(data)

    def call(self, method: str, params: list | None = None) -> Any:
        """One call; raises RuntimeError when the node answers with an error object."""
        payload = {"jsonrpc": "2.0", "id": 0, "method": method, "params": params or []}
        return _result(self._post(payload), method)

    def batch(self, calls: list[tuple[str, list]]) -> list[Any]:
        """Several calls in one batch request; results in call order."""
        if not calls:
            return []
        payload = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)
        ]
        replies = self._post(payload)
        # A server may answer a batch in any order.
        return [_result(r, calls[r["id"]][0]) for r in sorted(replies, key=lambda r: r["id"])]


def _result(reply: dict[str, Any], method: str) -> Any:
    if reply.get("error") is not None:
        raise RuntimeError(f"{method} failed: {reply['error']}")
    return reply.get("result")


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as anvil's listener does
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def die_with_parent() -> Any:
    """A preexec_fn that has the child killed when this process dies (None off Linux)."""
    # PR_SET_PDEATHSIG fires when the spawning *thread* ends, so arm it only from the main
    # thread; libc is loaded before fork because dlopen in the child can deadlock.
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return lambda: libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def log_tail(log: Any) -> str:
    """The end of a node's output file, for an error message."""
    log.seek(0)
    return log.read().decode(errors="replace")[-2000:].strip() or "(no output)"


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """Terminate a node's process, killing it after 5 s; nothing if there is none or it ended."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Anvil:
    """One anvil process on a loopback port; a context manager, or call start() and stop()."""

    def __init__(
        self,
        binary: Path | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        prune_history: bool = True,
    ) -> None:
        self.binary = binary
        # Pruned history seeds a million logs in seconds; anvil_reorg needs the history kept.
        self.extra_args = ("--prune-history",) * prune_history + tuple(extra_args)
        self._fixed_port = port is not None
        self._set_port(port or free_port())
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def _set_port(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._client = RpcConnection(self.url)

    def start(self, timeout: float = 30) -> Anvil:
        """Spawn anvil (unless running); return self once eth_chainId answers."""
        if self._proc is not None:
            return self
        binary = self.binary or find_anvil()
        for _ in range(4):
            # A taken port must be caught before spawning: whoever holds it would answer the
            # readiness probe while our anvil is still starting up.
            if not _port_taken(self.port):
                self._spawn(binary)
                if self._wait_ready(timeout):
                    return self
            if self._fixed_port:
                break
            self._set_port(free_port())
        raise RuntimeError(f"anvil could not listen on 127.0.0.1:{self.port}: port in use")

    def _spawn(self, binary: Path) -> None:
        args = [str(binary), "--port", str(self.port), *_ANVIL_FLAGS, *self.extra_args]
        self._log = tempfile.TemporaryFile(prefix="anvil-", suffix=".log")  # noqa: SIM115
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            preexec_fn=die_with_parent(),
        )

    def _wait_ready(self, timeout: float) -> bool:
        """True once ours answers, False when the port was taken; raises on other failures."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (code := self._proc.poll()) is not None:
                tail = log_tail(self._log)
                self.stop()
                if "in use" in tail:
                    return False
                raise RuntimeError(f"anvil exited with code {code}: {tail}")
            with contextlib.suppress(OSError, HTTPException, RuntimeError):
                self._client.call("eth_chainId")
                # A foreign server on a colliding port answers too: ours must still be alive.
                if self._proc.poll() is None:
                    return True
            time.sleep(0.05)
        tail = log_tail(self._log)
        self.stop()
        raise RuntimeError(f"anvil did not answer on {self.url} within {timeout}s: {tail}")

    def stop(self) -> None:
        """Stop the process (terminate, then kill); safe to call more than once."""
        proc, self._proc = self._proc, None
        stop_process(proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def rpc(self, method: str, params: list | None = None) -> Any:
        """One JSON-RPC call; raises RuntimeError when the node answers with an error object."""
        return self._client.call(method, params)

    def batch(self, calls: list[tuple[str, list]]) -> list[Any]:
        """Several calls in one JSON-RPC batch request; results in call order."""
        return self._client.batch(calls)

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
