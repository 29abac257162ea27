"""--engine ray on a real two-node Ray cluster started by the tests: the same output as the node
and as the multiprocessing engine; an endpoint actor killed mid-run, or a whole node lost, loses
and doubles nothing."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
from conftest import backfill, stored_rows
from helpers import assert_equals_node, wait_for

from pipeline.messages import Notice, TaskWritten, WorkerStarted
from pipeline.store.layout import LOGS_DIR
from pipeline.store.manifest import load_manifest

# One cluster per test process, and Ray's fixed ports allow one on a machine: under xdist, all
# of these run in one process.
pytestmark = pytest.mark.xdist_group("ray")

CHUNK = 100  # 30 tasks over the seeded 3000 blocks
FILE_BLOCKS = 1000  # several final files, so that their names and ranges are compared too


def test_a_ray_run_on_two_nodes_equals_the_node_and_the_multiprocessing_run(
    tmp_path, node, seeded, ray_cluster
):
    rpc = [f"a={node.url}", f"b={node.url}"]
    span = {"from_block": seeded.first_block, "to_block": seeded.last_block}
    started: list[WorkerStarted] = []
    on_ray = backfill(
        tmp_path / "ray",
        rpc,
        report=lambda e: started.append(e) if isinstance(e, WorkerStarted) else None,
        engine="ray",
        ray_address=ray_cluster.address,
        file_blocks=FILE_BLOCKS,
        **span,
    )
    local = backfill(tmp_path / "mp", rpc, file_blocks=FILE_BLOCKS, **span)

    assert_equals_node(on_ray, tmp_path / "ray", node, **_blocks(span))
    assert_equals_node(local, tmp_path / "mp", node, **_blocks(span))
    assert stored_rows(tmp_path / "ray") == stored_rows(tmp_path / "mp")
    ray_files = sorted(p.name for p in (tmp_path / "ray" / LOGS_DIR).iterdir())
    assert ray_files == sorted(p.name for p in (tmp_path / "mp" / LOGS_DIR).iterdir())
    assert len(ray_files) > 1
    ray_manifest, mp_manifest = load_manifest(tmp_path / "ray"), load_manifest(tmp_path / "mp")
    assert ray_manifest.files == mp_manifest.files
    assert ray_manifest.covered == mp_manifest.covered
    # SPREAD placed the two endpoints' actors on the two nodes.
    assert len({e.node for e in started}) == 2, started


@pytest.mark.slow  # ~12 s; the quick subset keeps the two-node run
def test_an_endpoint_actor_killed_mid_run_loses_and_doubles_nothing(
    tmp_path, node, seeded, proxy, ray_cluster
):
    # The victim answers slowly, so that a request that came in 0.3 s ago is still pending; the
    # other one not so fast that it takes every task left before the victim's next claim (on a
    # busy machine the victim's first TaskWritten can arrive a second late).
    victim_proxy, other = proxy(latency_ms=(600, 700)), proxy(latency_ms=(150, 250))
    pids: dict[str, int] = {}
    killed: list[int] = []

    def asked_for_more_logs() -> bool:
        stats = victim_proxy.stats()
        pending = time.monotonic() - stats["request_times"][-1] < 0.3
        return stats["methods"].get("eth_getLogs", 0) >= 2 and pending

    def report(event) -> None:
        if isinstance(event, WorkerStarted):
            pids[event.worker_id] = event.pid
        if isinstance(event, TaskWritten) and event.endpoint == "victim" and not killed:
            # Its next request is out (and unanswered): it dies holding that task's lease.
            wait_for(asked_for_more_logs, 30, "the victim to claim its next task")
            killed.append(pids["victim#0"])
            os.kill(pids["victim#0"], signal.SIGKILL)

    notices: list[Notice] = []
    result = backfill(
        tmp_path,
        [f"victim={victim_proxy.url}", f"other={other.url}"],
        report=lambda e: (report(e), notices.append(e)),
        engine="ray",
        ray_address=ray_cluster.address,
        from_block=seeded.first_block,
        to_block=seeded.last_block,
        chunk_size=CHUNK,
        # Stored only after its checks, a task's TaskWritten would come after the victim's
        # next request is answered: the kill needs it while that request is out.
        verify=False,
    )
    assert killed, "the victim never completed a task"
    assert_equals_node(result, tmp_path, node, seeded.first_block, seeded.last_block)
    died = [n.text for n in notices if isinstance(n, Notice) and "victim died" in n.text]
    assert died and int(re.search(r"(\d+) tasks requeued", died[0])[1]) >= 1, died
    assert "victim#1" in pids  # Ray restarted the actor and it fetched again
    assert pids["victim#1"] not in (0, pids["victim#0"])


@pytest.mark.slow  # ~20 s: a node to start, and Ray's notice of its loss
def test_a_worker_node_lost_mid_run_moves_its_endpoint_and_loses_nothing(
    tmp_path, node, seeded, proxy, ray_cluster
):
    # A third node joins the shared cluster for this test and is lost (its processes SIGKILLed,
    # as a machine that goes away) while the endpoint placed there holds a lease.
    extra, extra_id = ray_cluster.add_node()
    proxies = {f"p{i}": proxy(latency_ms=(300, 350)) for i in range(3)}
    started: list[WorkerStarted] = []
    lost: list[str] = []

    def holds_a_lease(victim: str) -> bool:
        stats = proxies[victim].stats()
        return stats["request_times"] and time.monotonic() - stats["request_times"][-1] < 0.15

    def report(event) -> None:
        if isinstance(event, WorkerStarted):
            started.append(event)
        if isinstance(event, TaskWritten) and not lost:
            victim = next(e.endpoint for e in started if e.node == extra_id)
            wait_for(lambda: holds_a_lease(victim), 30, f"{victim} to hold a lease")
            lost.append(victim)
            ray_cluster.kill_node(extra)

    notices: list[Notice] = []
    result = backfill(
        tmp_path,
        [f"{name}={p.url}" for name, p in proxies.items()],
        report=lambda e: (report(e), notices.append(e)),
        engine="ray",
        ray_address=ray_cluster.address,
        from_block=seeded.first_block,
        to_block=seeded.last_block,
        chunk_size=CHUNK,
    )
    assert lost, "no task was written"
    assert_equals_node(result, tmp_path, node, seeded.first_block, seeded.last_block)
    died = [n.text for n in notices if isinstance(n, Notice) and f"{lost[0]} died" in n.text]
    assert died and int(re.search(r"(\d+) tasks requeued", died[0])[1]) >= 1, died
    moved = [e for e in started if e.worker_id == f"{lost[0]}#1"]
    assert moved and moved[0].node not in ("", extra_id), started


def _blocks(span: dict) -> dict:
    return {"start": span["from_block"], "end": span["to_block"]}


@pytest.mark.slow  # ~12 s; the quick subset keeps the two-node run and the S3 runs
def test_a_ray_run_into_s3_equals_the_node_and_the_multiprocessing_run_into_s3(
    tmp_path, node, seeded, ray_cluster, s3
):
    from test_object_storage import FIRST, LAST, assert_store_equals_node

    buckets = {"ray": s3.new_bucket(), "mp": s3.new_bucket()}
    span = {"from_block": FIRST, "to_block": LAST, "chunk_size": 50, "file_blocks": 300}
    on_ray = backfill(
        f"s3://{buckets['ray']}/run",
        [f"a={node.url}", f"b={node.url}"],
        staging=tmp_path / "ray-staging",
        engine="ray",
        ray_address=ray_cluster.address,
        **span,
    )
    local = backfill(
        f"s3://{buckets['mp']}/run", [node.url], staging=tmp_path / "mp-staging", **span
    )
    assert on_ray.exit_code == local.exit_code == 0, (on_ray.message, local.message)
    for bucket in buckets.values():
        assert_store_equals_node(s3, bucket, "run", node)
    names = {
        run: sorted(k for k in s3.keys(bucket) if k.startswith("run/logs/"))
        for run, bucket in buckets.items()
    }
    assert names["ray"] == names["mp"] and names["ray"], names
