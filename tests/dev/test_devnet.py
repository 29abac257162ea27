"""The devnet helpers against a real anvil: process lifecycle, emitters, seeding, discovery."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from eth_utils import keccak
from helpers import wait_for

from pipeline.dev.devnet import Anvil, find_anvil
from pipeline.dev.seeding import DEV_ACCOUNT, EMITTERS, SeedReport, seed_logs

BLOCKS, LOGS, SEED = 300, 5000, 3
BY_ADDRESS = {e.address: e for e in EMITTERS}


@pytest.fixture(scope="module")
def node() -> Iterator[Anvil]:
    with Anvil(find_anvil()) as anvil:
        yield anvil


@pytest.fixture(scope="module")
def seeded(node: Anvil) -> SeedReport:
    return seed_logs(node.url, blocks=BLOCKS, logs=LOGS, seed=SEED)


@pytest.fixture(scope="module")
def logs(node: Anvil, seeded: SeedReport) -> list[dict]:
    return get_logs(node, seeded)


def get_logs(node: Anvil, report: SeedReport) -> list[dict]:
    span = {"fromBlock": hex(report.first_block), "toBlock": hex(report.last_block)}
    return node.rpc("eth_getLogs", [span])


def test_node_answers_on_loopback(node: Anvil) -> None:
    assert node.url.startswith("http://127.0.0.1:")
    assert node.rpc("eth_chainId") == "0x7a69"
    assert node.batch([("eth_chainId", []), ("net_version", [])]) == ["0x7a69", "31337"]
    with pytest.raises(RuntimeError, match="eth_noSuchMethod"):
        node.rpc("eth_noSuchMethod")


def test_stop_is_idempotent_and_frees_the_port() -> None:
    anvil = Anvil(find_anvil()).start()
    assert anvil.start() is anvil  # already running: no second process
    anvil.stop()
    anvil.stop()
    with pytest.raises(OSError):
        anvil.rpc("eth_chainId")


def test_taken_port_and_bad_flags_fail_clearly(node: Anvil) -> None:
    with pytest.raises(RuntimeError, match="port in use"):
        Anvil(find_anvil(), port=node.port).start()
    with pytest.raises(RuntimeError, match="--no-such-flag"):
        Anvil(find_anvil(), extra_args=["--no-such-flag"]).start()


def test_anvil_dies_with_its_parent() -> None:
    code = "from pipeline.dev.devnet import Anvil; print(Anvil().start().port, flush=True); input()"
    parent = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert parent.stdout is not None
    port = int(parent.stdout.readline())
    probe = Anvil(port=port)  # a handle on the child's node, never started itself
    assert probe.rpc("eth_chainId") == "0x7a69"
    parent.kill()
    parent.wait()

    def node_gone() -> bool:
        try:
            probe.rpc("eth_chainId")
        except OSError:
            return True
        return False

    wait_for(node_gone, 30, "anvil to die with the process that started it", interval=0.05)


def test_report_matches_the_node(node: Anvil, seeded: SeedReport, logs: list[dict]) -> None:
    assert seeded.logs == len(logs)
    assert abs(seeded.logs - LOGS) <= LOGS // 10
    assert seeded.last_block - seeded.first_block + 1 == BLOCKS
    assert int(node.rpc("eth_blockNumber"), 16) == seeded.last_block
    assert seeded.contracts == tuple(e.address for e in EMITTERS)
    assert {log["address"] for log in logs} == set(seeded.contracts)
    assert seeded.topic0s == tuple(e.topic0 for e in EMITTERS if e.topic0)
    assert {log["topics"][0] for log in logs if log["topics"]} == set(seeded.topic0s)


def test_every_transaction_succeeds(node: Anvil, seeded: SeedReport) -> None:
    blocks = range(seeded.first_block, seeded.last_block + 1)
    receipts = [
        r for rs in node.batch([("eth_getBlockReceipts", [hex(b)]) for b in blocks]) for r in rs
    ]
    assert len(receipts) == seeded.transactions
    assert all(r["status"] == "0x1" and r["from"] == DEV_ACCOUNT for r in receipts)
    assert sum(len(r["logs"]) for r in receipts) == seeded.logs


def test_emitters_have_their_shapes(logs: list[dict]) -> None:
    assert {e.topics for e in EMITTERS} == {0, 1, 2, 3, 4}
    assert {e.data_size for e in EMITTERS} >= {0, 32, 64}
    for e in EMITTERS:
        if e.topic0:
            assert e.topic0 == "0x" + keccak(text=e.event).hex()
    for log in logs:
        e = BY_ADDRESS[log["address"]]
        assert len(log["topics"]) == e.topics
        assert len(log["data"]) == 2 + 2 * e.data_size
        if e.topics:
            assert log["topics"][0] == e.topic0
        if e.topics >= 2:
            assert log["topics"][1] == "0x" + DEV_ACCOUNT[2:].rjust(64, "0")  # CALLER
    assert any(log["data"] == "0x" for log in logs)
    transfer = [log for log in logs if log["topics"][:1] == [EMITTERS[0].topic0]]
    assert EMITTERS[0].event.startswith("Transfer") and transfer
    assert {int(log["topics"][2], 16) for log in transfer} >= {1, 2}  # the loop counter


def test_log_density_is_uneven(seeded: SeedReport, logs: list[dict]) -> None:
    per_block = Counter(int(log["blockNumber"], 16) for log in logs)
    counts = [per_block[b] for b in range(seeded.first_block, seeded.last_block + 1)]
    empty = counts.count(0)
    assert BLOCKS // 5 <= empty <= BLOCKS * 3 // 4
    assert any(a == b == 0 for a, b in pairwise(counts))  # runs of empty blocks
    assert max(counts) >= 200
    busy = sorted(c for c in counts if c)
    assert busy[len(busy) // 2] <= 30  # most busy blocks hold few logs
    txs_per_block = Counter((log["blockNumber"], log["transactionHash"]) for log in logs)
    assert max(Counter(block for block, _ in txs_per_block).values()) >= 3


def test_same_seed_gives_the_same_logs(seeded: SeedReport, logs: list[dict]) -> None:
    def shape(logs: list[dict]) -> list[tuple]:
        keys = ("blockNumber", "logIndex", "address", "topics", "data")
        return [tuple(str(log[k]) for k in keys) for log in logs]

    with Anvil(find_anvil()) as other:
        again = seed_logs(other.url, blocks=BLOCKS, logs=LOGS, seed=SEED)
        assert again == seeded
        assert shape(get_logs(other, again)) == shape(logs)
        other.rpc("anvil_reset")  # back to genesis, with anvil's default 1 gwei base fee
        different = seed_logs(other.url, blocks=BLOCKS, logs=LOGS, seed=SEED + 1)
        assert shape(get_logs(other, different)) != shape(logs)


def test_find_anvil_honours_anvil_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = executable(tmp_path / "my-anvil")
    monkeypatch.setenv("ANVIL_BIN", str(fake))
    assert find_anvil() == fake
    monkeypatch.setenv("ANVIL_BIN", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="ANVIL_BIN"):
        find_anvil()


def test_find_anvil_uses_the_tools_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANVIL_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # neither anvil nor npm on PATH
    monkeypatch.setenv("PIPELINE_TOOLS_DIR", str(tmp_path / "tools"))
    with pytest.raises(RuntimeError, match="anvil not found"):
        find_anvil(install=False)
    with pytest.raises(RuntimeError, match="npm is missing"):
        find_anvil()
    binary = executable(tmp_path / "tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
    assert find_anvil(install=False) == binary


def test_find_anvil_skips_the_npm_wrapper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scope = tmp_path / "node_modules" / "@foundry-rs"
    wrapper = executable(scope / "anvil" / "bin.mjs")
    real = executable(scope / "anvil-linux-amd64" / "bin" / "anvil")
    (tmp_path / "node_modules" / ".bin").mkdir()
    (tmp_path / "node_modules" / ".bin" / "anvil").symlink_to(wrapper)
    monkeypatch.delenv("ANVIL_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "node_modules" / ".bin"))
    assert find_anvil(install=False) == real


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path
