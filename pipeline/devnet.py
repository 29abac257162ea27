"""A real local Ethereum node for tests and the demo: find or install anvil, run it, seed logs."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException, RemoteDisconnected
from itertools import groupby, pairwise
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

ANVIL_PACKAGE = "@foundry-rs/anvil@1.7.1"
DEV_ACCOUNT = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"  # anvil's first unlocked account
# The flag takes a u64; 10**15 fits the biggest seeded block and stays exact in a JSON double.
GAS_LIMIT = 10**15
_NPM_FLAGS = ["--no-audit", "--no-fund", "--loglevel=error"]
# --quiet: anvil's per-transaction log lines cost real time when seeding a million logs.
_ANVIL_FLAGS = (
    f"--host 127.0.0.1 --hardfork cancun --prune-history --no-mining --gas-limit {GAS_LIMIT} "
    "--block-base-fee-per-gas 0 --quiet"
).split()


@dataclass(frozen=True)
class Emitter:
    """A hand-assembled contract emitting logs with `topics` topics and `data_size` data bytes."""

    event: str
    address: str
    topics: int
    data_size: int
    topic0: str | None  # keccak(event); None for the anonymous LOG0 emitter


EMITTERS: tuple[Emitter, ...] = tuple(
    Emitter(event, f"0x{0xE1117E01 + i:040x}", topics, size, topic0)
    for i, (event, topics, size, topic0) in enumerate((
        ("Transfer(address,address,uint256)", 3, 32,
         "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"),
        ("anonymous Ping(uint256)", 0, 32, None),
        ("Tick(uint256,uint256)", 1, 64,
         "0xef885d13ae547f2952755e35bb377846c2c38bfb21d20b5f5fabe27e4b68825f"),
        ("Poke(address)", 2, 0,
         "0x8de1cbf50111cf8fb638e287146dbebe220633426e6df96cafd96993d3e34317"),
        ("Swap(address,uint256,uint256,uint256)", 4, 32,
         "0x5620e542b9ce6a03dbe5af2c6483e766af6c96439562b26a0dcd2edd7099524b"),
    ))
)  # fmt: skip


@dataclass(frozen=True)
class SeedReport:
    """What seed_logs put on chain; `logs` equals eth_getLogs over [first_block, last_block]."""

    first_block: int
    last_block: int
    logs: int
    transactions: int
    contracts: tuple[str, ...]
    topic0s: tuple[str, ...]


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
    tools = _tools_dir()
    if found := _installed_binary(tools):
        return found
    if not install:
        raise RuntimeError(f"anvil not found: set ANVIL_BIN, put anvil on PATH or install {tools}")
    return _npm_install(tools)


def _tools_dir() -> Path:
    if env := os.environ.get("PIPELINE_TOOLS_DIR"):
        return Path(env).expanduser()
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file():
        return root / ".tools"
    return Path.home() / ".cache" / "pipeline" / "tools"


def _installed_binary(prefix: Path) -> Path | None:
    scope = prefix / "node_modules" / "@foundry-rs"
    # The platform package holds the binary; the postinstall fallback puts it in anvil/ itself.
    candidates = [*sorted(scope.glob("anvil-*/bin/anvil")), scope / "anvil" / "anvil"]
    return next((p for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


def _npm_install(tools: Path) -> Path:
    if (npm := shutil.which("npm")) is None:
        raise RuntimeError(
            "anvil not found and npm is missing: install Node.js with npm "
            "(e.g. apt-get install npm) or set ANVIL_BIN"
        )
    tools.mkdir(parents=True, exist_ok=True)
    # Parallel test workers may all get here: one installs, the others wait and reuse it.
    with open(tools / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if found := _installed_binary(tools):
            return found
        cmd = [npm, "install", "--prefix", str(tools), *_NPM_FLAGS, ANVIL_PACKAGE]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if found := _installed_binary(tools):
            return found
    why = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}, no binary"])[-1]
    raise RuntimeError(f"npm install {ANVIL_PACKAGE} into {tools} failed: {why}")


class _Client:
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


def _free_port() -> int:
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


def _die_with_parent() -> Any:
    # PR_SET_PDEATHSIG fires when the spawning *thread* ends, so arm it only from the main
    # thread; libc is loaded before fork because dlopen in the child can deadlock.
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return lambda: libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


class Anvil:
    """One anvil process on a loopback port; a context manager, or call start() and stop()."""

    def __init__(
        self, binary: Path | None = None, port: int | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        self.binary = binary
        self.extra_args = tuple(extra_args)
        self._fixed_port = port is not None
        self._set_port(port or _free_port())
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def _set_port(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._client = _Client(self.url)

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
            self._set_port(_free_port())
        raise RuntimeError(f"anvil could not listen on 127.0.0.1:{self.port}: port in use")

    def _spawn(self, binary: Path) -> None:
        args = [str(binary), "--port", str(self.port), *_ANVIL_FLAGS, *self.extra_args]
        self._log = tempfile.TemporaryFile(prefix="anvil-", suffix=".log")  # noqa: SIM115
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            preexec_fn=_die_with_parent(),
        )

    def _wait_ready(self, timeout: float) -> bool:
        """True once ours answers, False when the port was taken; raises on other failures."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (code := self._proc.poll()) is not None:
                tail = self._log_tail()
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
        tail = self._log_tail()
        self.stop()
        raise RuntimeError(f"anvil did not answer on {self.url} within {timeout}s: {tail}")

    def _log_tail(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:].strip() or "(no output)"

    def stop(self) -> None:
        """Stop the process (terminate, then kill); safe to call more than once."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
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


# EVM opcodes used by the emitters.
_STOP, _ADD, _SUB, _ISZERO, _XOR, _CALLER, _CALLDATALOAD = 0x00, 0x01, 0x03, 0x15, 0x18, 0x33, 0x35
_MSTORE, _JUMP, _JUMPI, _JUMPDEST, _PUSH0, _PUSH1, _PUSH2 = 0x52, 0x56, 0x57, 0x5B, 0x5F, 0x60, 0x61
_PUSH32, _DUP1, _SWAP1, _LOG0 = 0x7F, 0x80, 0x90, 0xA0
_SALT = bytes([_PUSH1, 0x20, _CALLDATALOAD])  # calldata word 1


def _emitter_code(e: Emitter) -> bytes:
    """Runtime code: for i = calldata word 0 down to 1, emit one log built from i, CALLER, salt."""
    body = bytearray()
    if e.data_size >= 32:
        body += _SALT + bytes([_DUP1 + 1, _ADD, _PUSH0, _MSTORE])  # mem[0:32] = salt + i
    if e.data_size >= 64:
        body += _SALT + bytes([_DUP1 + 1, _XOR, _PUSH1, 0x20, _MSTORE])  # mem[32:64] = salt ^ i
    # LOGn pops offset, size, topic0, topic1...: push topics last-first; `depth` items sit on i.
    for depth, k in enumerate(reversed(range(e.topics))):
        if k == 3:
            body += _SALT + bytes([_DUP1 + depth + 1, _XOR])  # salt ^ i
        elif k == 2:
            body += bytes([_DUP1 + depth])  # i
        elif k == 1:
            body += bytes([_CALLER])
        else:
            body += bytes([_PUSH32]) + bytes.fromhex(str(e.topic0)[2:])
    body += bytes([_PUSH1, e.data_size, _PUSH0, _LOG0 + e.topics])
    body += bytes([_PUSH1, 1, _SWAP1, _SUB, _PUSH2, 0, 2, _JUMP])  # i -= 1; back to offset 2
    end = 9 + len(body)
    head = [_PUSH0, _CALLDATALOAD, _JUMPDEST, _DUP1, _ISZERO, _PUSH2, end >> 8, end & 0xFF, _JUMPI]
    return bytes(head) + body + bytes([_JUMPDEST, _STOP])


@dataclass(frozen=True)
class _Tx:
    emitter: Emitter
    count: int
    salt: int

    @property
    def gas(self) -> int:
        # Intrinsic + calldata + a generous bound per loop turn; gas is free on the devnet.
        e = self.emitter
        return 22_300 + self.count * (375 * (e.topics + 1) + 8 * e.data_size + 150)

    def json(self, nonce: int, price: int) -> dict[str, str]:
        return {
            "from": DEV_ACCOUNT,
            "to": self.emitter.address,
            "nonce": hex(nonce),
            "gas": hex(self.gas),
            "gasPrice": hex(price),
            "value": "0x0",
            "data": f"0x{self.count:064x}{self.salt:064x}",
        }


def _busy_blocks(blocks: int, rng: random.Random) -> list[int]:
    """Offsets of blocks that get logs: alternating busy and empty runs, some long quiet gaps."""
    kinds: list[bool] = []
    busy = rng.random() < 0.5
    while len(kinds) < blocks:
        if busy:
            run = 1 + int(rng.expovariate(1 / 10))
        else:
            run = rng.randint(30, 150) if rng.random() < 0.03 else 1 + int(rng.expovariate(1 / 5))
        kinds += [busy] * run
        busy = not busy
    return [i for i, k in enumerate(kinds[:blocks]) if k] or [rng.randrange(blocks)]


def _allocate(total: int, slots: int, rng: random.Random) -> list[int]:
    """Split `total` into `slots` parts >= 1; lognormal weights make most small, a few huge."""
    weights = [rng.lognormvariate(0, 2.0) for _ in range(slots)]
    shares = [w * (total - slots) / sum(weights) for w in weights]
    counts = [1 + int(s) for s in shares]
    by_remainder = sorted(range(slots), key=lambda i: int(shares[i]) - shares[i])
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _plan(blocks: int, logs: int, rng: random.Random) -> list[list[_Tx]]:
    """Transactions per block (an empty list is an empty block), exactly `logs` logs in all."""
    busy = _busy_blocks(blocks, rng)
    busy = sorted(rng.sample(busy, min(len(busy), logs)))
    plan: list[list[_Tx]] = [[] for _ in range(blocks)]
    emitters = rng.sample(EMITTERS, len(EMITTERS))  # the first transactions cover every emitter
    for block, count in zip(busy, _allocate(logs, len(busy), rng) if busy else [], strict=True):
        parts = min(count, rng.choice((1, 1, 1, 1, 2, 2, 3, 4, 6, 10)))
        cuts = [0, *sorted(rng.sample(range(1, count), parts - 1)), count]
        for a, b in pairwise(cuts):
            emitter = emitters.pop() if emitters else rng.choice(EMITTERS)
            plan[block].append(_Tx(emitter, b - a, rng.getrandbits(64)))
    return plan


def seed_logs(url: str, *, blocks: int, logs: int, seed: int = 0) -> SeedReport:
    """Install the emitter contracts and mine `blocks` blocks holding about `logs` logs,
    deterministically from `seed`."""
    if blocks < 1 or logs < 0:
        raise ValueError("seed_logs needs blocks >= 1 and logs >= 0")
    rpc, plan = _Client(url), _plan(blocks, logs, random.Random(seed))
    latest = rpc.call("eth_getBlockByNumber", ["latest", False])
    if (need := max(sum(t.gas for t in txs) for txs in plan)) > int(latest["gasLimit"], 16):
        raise RuntimeError(f"block gas limit too low to seed: start anvil with --gas-limit {need}")
    # Explicit gas, price and nonce: anvil then estimates nothing per transaction. The pending
    # block's base fee counts: after anvil_reset it is 1 gwei although the latest block says 0.
    pending = rpc.call("eth_getBlockByNumber", ["pending", False]) or latest
    price = 2 * int(pending.get("baseFeePerGas") or "0x0", 16)
    setup = [("anvil_setCode", [e.address, "0x" + _emitter_code(e).hex()]) for e in EMITTERS]
    if price:
        setup.append(("anvil_setBalance", [DEV_ACCOUNT, hex(10**30)]))
    rpc.batch(setup)
    first = int(latest["number"], 16) + 1
    nonce0 = int(rpc.call("eth_getTransactionCount", [DEV_ACCOUNT, "pending"]), 16)
    if automine := rpc.call("anvil_getAutomine"):
        rpc.call("evm_setAutomine", [False])
    # Impersonated sends skip ECDSA signing and sender recovery: seeding runs twice as fast.
    rpc.call("anvil_impersonateAccount", [DEV_ACCOUNT])
    try:
        nonce = _mine(rpc, plan, nonce0, price)
    finally:
        rpc.call("anvil_stopImpersonatingAccount", [DEV_ACCOUNT])
        if automine:
            rpc.call("evm_setAutomine", [True])
    last = first + blocks - 1
    if int(rpc.call("eth_getTransactionCount", [DEV_ACCOUNT, hex(last)]), 16) != nonce:
        raise RuntimeError("some seeded transactions were not mined in their planned block")
    return SeedReport(
        first_block=first,
        last_block=last,
        logs=sum(t.count for txs in plan for t in txs),
        transactions=nonce - nonce0,
        contracts=tuple(e.address for e in EMITTERS),
        topic0s=tuple(e.topic0 for e in EMITTERS if e.topic0 is not None),
    )


def _mine(rpc: _Client, plan: list[list[_Tx]], nonce: int, price: int) -> int:
    """Send and mine the plan block by block; returns the next nonce."""
    for busy, run in groupby(plan, key=bool):
        if not busy:
            rpc.call("anvil_mine", [hex(len(list(run)))])  # a whole run of empty blocks at once
            continue
        for txs in run:
            rpc.batch(
                [("eth_sendTransaction", [t.json(nonce + i, price)]) for i, t in enumerate(txs)]
            )
            nonce += len(txs)
            rpc.call("anvil_mine", ["0x1"])
    return nonce
