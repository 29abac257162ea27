"""Seed a node with real event-emitting transactions: hand-assembled emitter contracts installed
with anvil_setCode (no Solidity compiler needed), uneven log density and runs of empty blocks.
Hardhat's and ganache's nodes are seeded the same way through their own development calls."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby, pairwise

from pipeline.dev.devnet import RpcConnection

# The first account of the "test test ... junk" mnemonic: anvil's and hardhat's first unlocked
# account, and ganache's when started with that mnemonic.
DEV_ACCOUNT = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"

Call = tuple[str, list]


@dataclass(frozen=True)
class Dialect:
    """How a node implementation names the development calls that seeding makes."""

    set_code: str
    set_balance: str
    mine: Callable[[int], Call]  # mine n blocks
    automine_off: Call
    automine_on: Call
    automine: str | None = None  # asks whether it mines every transaction (None: it does)
    impersonate: tuple[str, str] | None = None  # start and stop; sends then skip signing


ANVIL = Dialect(
    "anvil_setCode", "anvil_setBalance", lambda n: ("anvil_mine", [hex(n)]),
    ("evm_setAutomine", [False]), ("evm_setAutomine", [True]), "anvil_getAutomine",
    ("anvil_impersonateAccount", "anvil_stopImpersonatingAccount"),
)  # fmt: skip
HARDHAT = Dialect(
    "hardhat_setCode", "hardhat_setBalance", lambda n: ("hardhat_mine", [hex(n)]),
    ("evm_setAutomine", [False]), ("evm_setAutomine", [True]), "hardhat_getAutomine",
)  # fmt: skip
GANACHE = Dialect(
    "evm_setAccountCode", "evm_setAccountBalance", lambda n: ("evm_mine", [{"blocks": n}]),
    ("miner_stop", []), ("miner_start", []),
)  # fmt: skip


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


def seed_logs(
    url: str, *, blocks: int, logs: int, seed: int = 0, dialect: Dialect = ANVIL
) -> SeedReport:
    """Install the emitter contracts and mine `blocks` blocks holding about `logs` logs,
    deterministically from `seed`, through the development calls of `dialect`'s node."""
    if blocks < 1 or logs < 0:
        raise ValueError("seed_logs needs blocks >= 1 and logs >= 0")
    rpc, plan, d = RpcConnection(url), _plan(blocks, logs, random.Random(seed)), dialect
    latest = rpc.call("eth_getBlockByNumber", ["latest", False])
    if (need := max(sum(t.gas for t in txs) for txs in plan)) > int(latest["gasLimit"], 16):
        raise RuntimeError(f"block gas limit too low to seed: start the node with {need} at least")
    # Explicit gas, price and nonce: anvil then estimates nothing per transaction. The pending
    # block's base fee counts: after anvil_reset it is 1 gwei although the latest block says 0.
    pending = rpc.call("eth_getBlockByNumber", ["pending", False]) or latest
    price = 2 * int(pending.get("baseFeePerGas") or "0x0", 16)
    setup = [(d.set_code, [e.address, "0x" + _emitter_code(e).hex()]) for e in EMITTERS]
    if price:
        setup.append((d.set_balance, [DEV_ACCOUNT, hex(10**30)]))
    rpc.batch(setup)
    if automine := rpc.call(d.automine) if d.automine else True:
        rpc.call(*d.automine_off)
    # Read after the set-up: ganache mines a block for each of its calls while it automines.
    first = int(rpc.call("eth_blockNumber"), 16) + 1
    nonce0 = int(rpc.call("eth_getTransactionCount", [DEV_ACCOUNT, "pending"]), 16)
    if d.impersonate:  # impersonated sends skip ECDSA signing and sender recovery: 2x faster
        rpc.call(d.impersonate[0], [DEV_ACCOUNT])
    try:
        nonce = _mine(rpc, plan, nonce0, price, d)
    finally:
        if d.impersonate:
            rpc.call(d.impersonate[1], [DEV_ACCOUNT])
        if automine:
            rpc.call(*d.automine_on)
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


def mine_empty(url: str, blocks: int, dialect: Dialect = ANVIL) -> None:
    """Mine `blocks` empty blocks: what was seeded before then lies that far below the head."""
    RpcConnection(url).call(*dialect.mine(blocks))


def _mine(rpc: RpcConnection, plan: list[list[_Tx]], nonce: int, price: int, d: Dialect) -> int:
    """Send and mine the plan block by block; returns the next nonce."""
    for busy, run in groupby(plan, key=bool):
        if not busy:
            rpc.call(*d.mine(len(list(run))))  # a whole run of empty blocks at once
            continue
        for txs in run:
            rpc.batch(
                [("eth_sendTransaction", [t.json(nonce + i, price)]) for i, t in enumerate(txs)]
            )
            nonce += len(txs)
            rpc.call(*d.mine(1))
    return nonce
