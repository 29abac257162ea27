"""Real provider behaviours, simulated in front of the real anvil node: caps, hints, throttling,
quotas, lagging heads. Every run must store exactly the node's logs, and behave as it should.

Each run also checks, on the proxy's own counters, that the fault it is about was really served:
a run that never met its fault proves nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
import requests
from conftest import backfill, get_logs, node_rows, stored_rows
from helpers import assert_equals_node, assert_readers_see_no_duplicate

from pipeline.config.endpoints import parse_endpoints
from pipeline.config.options import DEFAULT_STALL_TIMEOUT_S
from pipeline.config.settings import build_config
from pipeline.dev.simulator import PROFILES, FaultProxy, Profile
from pipeline.fetch.rpc import RpcClient
from pipeline.messages import Split
from pipeline.run.preflight import resolve_plan

FIRST, LAST = 1, 1000  # ~20,000 logs of the seeded node
CHUNK = 200
NEIGHBOUR_DELAY_MS = 150  # a healthy endpoint next to a faulty one: this much slower than it
NOBODY = "0x000000000000000000000000000000000000dead"  # an address that never logged anything


def run(output, urls, events=None, **kwargs):
    """Backfill FIRST..LAST through `urls`; return the result (events collected if a list)."""
    report = events.append if events is not None else (lambda event: None)
    kwargs = {"chunk_size": CHUNK, "from_block": FIRST, "to_block": LAST, **kwargs}
    return backfill(output, urls, report, **kwargs)


def endpoint(result, name):
    """The summary entry of the endpoint called `name`."""
    return next(e for e in result.summary["endpoints"] if e["name"] == name)


def outcomes(stats: dict, outcome: str) -> int:
    """eth_getLogs calls the proxy answered with `outcome` ("range_cap", "pruned", "quota"...)."""
    return sum(o == outcome for _, _, o in stats["get_logs"])


def episodes(stats: dict, outcome: str) -> int:
    """Runs of consecutive eth_getLogs calls answered with `outcome`, in arrival order."""
    seen = [o == outcome for _, _, o in stats["get_logs"]]
    return sum(now and not before for before, now in zip([False, *seen], seen, strict=False))


def busiest_second(times: list[float]) -> int:
    """The most requests in any 1-second window [t, t + 1) that starts at a request."""
    times = sorted(times)
    return max(sum(t <= u < t + 1.0 for u in times) for t in times)


def total(value: int | dict | None) -> int:
    """A stats entry as one number: a counter, or the sum of a {kind: count} dict."""
    return sum(value.values()) if isinstance(value, dict) else value or 0


@dataclass(frozen=True)
class Fault:
    """Which counter of a profile's proxy shows that its fault was served, and a run that meets
    the fault for sure: a fault that comes late needs small chunks (many requests)."""

    counter: str  # what is counted, for the failure message
    count: Callable[[dict], int]  # of FaultProxy.stats()
    least: int = 1  # what the count must reach
    chunk_size: int = CHUNK
    blocks: int = LAST - FIRST + 1
    concurrency: int = 1
    at_head: bool = False  # the run ends at the node's head: a lagging head falls inside it


def refused(outcome: str, **run: int) -> Fault:
    """The fault is an eth_getLogs answer the proxy records as `outcome`."""
    return Fault(f"get_logs {outcome!r}", lambda s: outcomes(s, outcome), **run)


def injected(*kinds: str, **run: int) -> Fault:
    """The fault is one of FAULTS `kinds` (any kind if none given), drawn at random."""

    def count(stats: dict) -> int:
        hits = stats["injected"]
        return sum(hits.get(kind, 0) for kind in kinds) if kinds else total(hits)

    return Fault(f"injected {'/'.join(kinds) or 'faults'}", count, **run)


def stamped(*kinds: str) -> Fault:
    """The fault is logs whose blockTimestamp the proxy changed: `kinds` of stripped, faked,
    zeroed."""

    def count(stats: dict) -> int:
        done = stats.get("block_timestamps", {})
        return sum(done.get(kind, 0) for kind in kinds)

    return Fault(f"logs with blockTimestamp {'/'.join(kinds)}", count)


def requests_from(number: int, what: str, **run: int) -> Fault:
    """The fault starts at the `number`th request: quotas and sudden deaths."""
    return Fault(f"requests ({what} from request {number})", lambda s: s["requests"], number, **run)


# The seeded random faults hit fixed request numbers (the preflight's 2 probes and the batch of
# tip hashes come first): flaky and drops first at request 2, hangs 3, truncated 5, slow-flaky
# and trickles 13.
RANGE_CAP, RESULT_CAP = refused("range_cap"), refused("result_cap")
# 60 small requests: the client asks far more than the 20 a second rate-limited allows, so the
# 20 it saves up run out after the first 20-odd.
THROTTLED = Fault("throttled", lambda s: s["throttled"], chunk_size=10, blocks=600)
# eth_blockNumber answers are the lagging head; the run reaches past it, so it matters.
LAGGED_HEAD = Fault("head answers", lambda s: s["methods"].get("eth_blockNumber", 0), at_head=True)
# Enough tasks for the quota (the death) to come even if the odd endpoint, some 50 tasks a
# second, were 5 times slower; few enough left after it for the neighbour.
QUOTA = requests_from(
    PROFILES["billing"].quota_after + 1, "quota refusals", chunk_size=24, concurrency=2
)
DEATH = requests_from(PROFILES["dies-mid-run"].die_after, "dead", chunk_size=18, concurrency=2)
# Headers are asked for in batches when the logs lack their timestamps.
BATCH_REFUSED = Fault("refused batches", lambda s: s.get("refused_batches", 0))
LIED = Fault("lies", lambda s: total(s["lies"]))
FAULTS: dict[str, Fault | None] = {  # None: no fault to meet
    "healthy": None,
    "fast": None,
    "medium": None,
    "slow": None,
    "flaky": injected(),
    "slow-flaky": injected(chunk_size=50, concurrency=2),
    "dead": None,  # refused connections never reach the proxy: no counter sees them
    "dies-mid-run": DEATH,
    "range-cap": RANGE_CAP,
    "range-cap-alchemy": RANGE_CAP,
    "range-cap-no-number": RANGE_CAP,
    "range-cap-reth": RANGE_CAP,
    "range-cap-publicnode": RANGE_CAP,
    "range-cap-drpc": RANGE_CAP,
    "result-cap": RESULT_CAP,
    "result-cap-alchemy": RESULT_CAP,
    "result-cap-ankr": RESULT_CAP,
    "hint-echo": RESULT_CAP,
    "hint-inverted": RESULT_CAP,
    "hint-outside": RESULT_CAP,
    "hint-none": RESULT_CAP,
    "tiny-result-cap": refused("result_cap", chunk_size=10, blocks=100),  # all via receipts
    "rate-limited": THROTTLED,
    "rate-limited-bare": THROTTLED,
    "rate-limited-html": THROTTLED,
    "rate-limited-infura": THROTTLED,
    "truncated": injected("truncated", chunk_size=100),
    "drops": injected("drop"),
    "hangs": injected("timeout"),
    # 16 tasks: the 13th request trickles; the other thread does the rest meanwhile, so only the
    # trickled range is asked again (halved) and the next trickle (the 24th) never comes.
    "trickles": injected("trickle", chunk_size=63, concurrency=2),
    "lagging": LAGGED_HEAD,
    "lagging-partial": LAGGED_HEAD,
    "billing": QUOTA,
    "billing-rpc": QUOTA,
    "unauthorized": requests_from(1, "every one refused"),
    "pruned": refused("pruned"),
    "hostile": Fault("hostile answers", lambda s: total(s.get("hostile"))),
    "no-block-timestamp": stamped("stripped"),
    "wrong-block-timestamp": stamped("faked", "zeroed"),
    "no-batches": BATCH_REFUSED,
    "batches-of-2": BATCH_REFUSED,
    # Alone, the checks ask its receipts (audits of a new endpoint) and learn it has none.
    "no-receipts": Fault("receipts calls", lambda s: s["methods"].get("eth_getBlockReceipts", 0)),
    "liar-behind": LIED,
    "liar-behind-split": LIED,
    "liar-drops": LIED,
    "liar-blanks": LIED,
    "liar-orphans": LIED,
    "liar-truncates": LIED,
    "liar-fabricates": LIED,
}
# Tested, with their faults, in files of their own: test_hostile.py alone and next to an honest
# endpoint, test_timestamps.py alone.
# Liars answer wrongly with HTTP 200: the tool cannot store the node's logs from one until it
# verifies answers (headers, blooms, audits across endpoints); tests/dev/test_simulator_liars.py.
LIARS = {name for name, profile in PROFILES.items() if profile.liar}
MIXED_ELSEWHERE = {"hostile"} | LIARS
# Next to an endpoint with eth_getBlockReceipts, no-receipts is never asked for receipts.
NOTHING_TO_MEET_MIXED = {"no-receipts"}
ALONE_ELSEWHERE = MIXED_ELSEWHERE | {
    "no-block-timestamp", "wrong-block-timestamp", "no-batches", "batches-of-2",
}  # fmt: skip
# Profiles an endpoint cannot finish a backfill with on its own: it goes out, lacks blocks, or
# (hangs) only gets slow. With a healthy endpoint next to it, none may lose a log.
CANNOT_FINISH_ALONE = {
    "dead", "dies-mid-run", "billing", "billing-rpc", "unauthorized", "pruned", "lagging",
    "lagging-partial", "hangs",
}  # fmt: skip
# The quick subset (-m "not slow") keeps one run of each kind.
QUICK_ALONE = {"range-cap"}
QUICK_MIXED = {"drops"}


def profiles(names: set[str], quick: set[str]) -> list:
    """Parameters for `names`: all but the `quick` ones marked slow."""
    marks = {name: () if name in quick else pytest.mark.slow for name in names}
    return [pytest.param(name, marks=marks[name]) for name in sorted(names)]


ALONE = profiles(set(PROFILES) - CANNOT_FINISH_ALONE - ALONE_ELSEWHERE, QUICK_ALONE)
MIXED = profiles(set(PROFILES) - MIXED_ELSEWHERE - NOTHING_TO_MEET_MIXED, QUICK_MIXED)


def fault_run(name: str, node) -> tuple[int, int, dict]:
    """The block range and the run options under which `name`'s fault is met for sure."""
    fault = FAULTS[name]
    if fault is None:
        return FIRST, LAST, {}
    first = FIRST
    if fault.at_head:
        first = int(node.rpc("eth_blockNumber", []), 16) - fault.blocks + 1
    last = first + fault.blocks - 1
    options = {"chunk_size": fault.chunk_size, "concurrency": fault.concurrency}
    return first, last, {"from_block": first, "to_block": last, **options}


def assert_served(name: str, stats: dict) -> None:
    """The proxy of profile `name` served its fault (nothing to check for a profile without)."""
    fault = FAULTS[name]
    if fault is not None:
        count = fault.count(stats)
        assert count >= fault.least, f"{name}: {fault.counter} {count} < {fault.least}: {stats}"


def slower_neighbour(profile: Profile) -> Profile:
    """A healthy profile always slower than `profile`: next to it (one request at a time, see
    mixed_run), `profile` gets most tasks."""
    delay = profile.latency_ms[1] + NEIGHBOUR_DELAY_MS
    return Profile("healthy", latency_ms=(delay, delay))


def mixed_run(output, odd: tuple[str, str], healthy_url: str, **kwargs):
    """Backfill through the endpoint `odd` (name, url) and a healthy one that takes a request at
    a time, whatever the odd one's concurrency."""
    urls = [f"{odd[0]}={odd[1]}", f"healthy={healthy_url}"]
    return run(output, urls, endpoint_settings={"healthy": {"concurrency": 1}}, **kwargs)


def test_every_profile_names_the_counter_that_shows_its_fault():
    assert set(PROFILES) <= set(FAULTS)


@pytest.mark.parametrize("name", ALONE)
def test_alone_each_provider_profile_gives_exactly_the_nodes_logs(tmp_path, node, seeded, name):
    first, last, options = fault_run(name, node)
    # The default stall timeout: alone, 4 faults in a row (20% of answers truncated, 30% failing)
    # back off 1+2+4+8 s, the tests' 15 s (it ended one run of a full suite).
    options.setdefault("stall_timeout", DEFAULT_STALL_TIMEOUT_S)
    with FaultProxy(node.url, PROFILES[name]) as proxy:
        result = run(tmp_path, [f"{name}={proxy.url}"], timeout=3.0, **options)
        stats = proxy.stats()
    assert_equals_node(result, tmp_path, node, first, last)
    assert_served(name, stats)


@pytest.mark.parametrize("name", MIXED)
def test_mixed_with_a_healthy_endpoint_each_profile_loses_nothing(tmp_path, node, seeded, name):
    first, last, options = fault_run(name, node)
    profile = PROFILES[name]
    with (
        FaultProxy(node.url, profile) as odd,
        FaultProxy(node.url, slower_neighbour(profile)) as healthy,
    ):
        result = mixed_run(tmp_path, (name, odd.url), healthy.url, timeout=3.0, **options)
        stats = odd.stats()
    assert_equals_node(result, tmp_path, node, first, last)
    assert_served(name, stats)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("dies-mid-run", marks=pytest.mark.slow),
        pytest.param("billing", marks=pytest.mark.slow),
        pytest.param("billing-rpc", marks=pytest.mark.slow),
        "pruned",
    ],
)
def test_alone_an_endpoint_that_cannot_finish_exits_1_and_stores_only_whole_ranges(
    tmp_path, node, seeded, name
):
    with FaultProxy(node.url, PROFILES[name]) as proxy:
        result = run(tmp_path, [f"{name}={proxy.url}"], chunk_size=10, stall_timeout=5.0)
        stats = proxy.stats()
    assert result.exit_code == 1, result.message
    missing = result.summary["failed_ranges"] + result.summary["unfetched_ranges"]
    assert missing
    lost = lambda block: any(r["from_block"] <= block <= r["to_block"] for r in missing)  # noqa: E731
    assert stored_rows(tmp_path) == [r for r in node_rows(node, FIRST, LAST) if not lost(r[0])]
    assert_readers_see_no_duplicate(tmp_path)
    assert_served(name, stats)


def test_splits_happen_where_the_providers_hint_says(tmp_path, node, seeded):
    events: list = []
    with FaultProxy(node.url, PROFILES["result-cap"]) as proxy:
        result = run(tmp_path, [f"capped={proxy.url}"], events)
        cap = proxy.profile.result_cap
        refused = [(a, b) for a, b, outcome in proxy.stats()["get_logs"] if outcome == "result_cap"]
    assert_equals_node(result, tmp_path, node, FIRST, LAST)
    splits = [e for e in events if isinstance(e, Split)]
    assert splits and len(splits) == len(refused) == endpoint(result, "capped")["splits"]
    blocks = [row[0] for row in node_rows(node, FIRST, LAST)]
    for split in splits:
        # The proxy's hint is the longest prefix of the range with at most `cap` logs.
        start = split.task.start
        fits = sum(start <= b <= split.at for b in blocks)
        assert fits <= cap < fits + blocks.count(split.at + 1), split


@pytest.mark.parametrize(
    "name",
    [
        "hint-echo",
        pytest.param("hint-inverted", marks=pytest.mark.slow),
        pytest.param("hint-outside", marks=pytest.mark.slow),
    ],
)
def test_a_bad_hint_is_ignored_and_the_range_halved(tmp_path, node, seeded, name):
    events: list = []
    with FaultProxy(node.url, PROFILES[name]) as proxy:
        result = run(tmp_path, [f"{name}={proxy.url}"], events)
        refused = outcomes(proxy.stats(), "result_cap")
    assert_equals_node(result, tmp_path, node, FIRST, LAST)
    splits = [e for e in events if isinstance(e, Split)]
    assert splits and len(splits) == refused
    for split in splits:
        assert split.at == split.task.start + split.task.blocks // 2 - 1


def test_a_block_with_more_logs_than_the_cap_is_read_from_its_receipts(tmp_path, node, seeded):
    with FaultProxy(node.url, PROFILES["tiny-result-cap"]) as proxy:
        result = run(tmp_path, [f"tiny={proxy.url}"], to_block=FIRST + 49)
        stats = proxy.stats()
    assert_equals_node(result, tmp_path, node, FIRST, FIRST + 49)
    assert outcomes(stats, "result_cap") > 0
    assert stats["methods"].get("eth_getBlockReceipts", 0) > 0


def test_with_rps_an_endpoint_stays_at_or_under_its_limit(tmp_path, node, seeded):
    rps = 10
    # 40 requests, 4 at a time: 4 s at 10 a second, where the endpoint would answer 50 in one.
    # The provider allows 15 a second, so a single throttle means --rps was exceeded too.
    with FaultProxy(node.url, replace(PROFILES["rate-limited"], rps_cap=15)) as proxy:
        result = run(tmp_path, [proxy.url], rps=rps, concurrency=4, chunk_size=25)
        stats = proxy.stats()
    assert_equals_node(result, tmp_path, node, FIRST, LAST)
    assert stats["throttled"] == 0
    # --rps paces every request of the run (the workers' and the verifier's) from the first
    # eth_getLogs on; the few requests before it (the preflight's probes) are left out.
    first = stats["request_methods"].index("eth_getLogs")
    fetches = stats["request_times"][first:]
    assert len(fetches) >= 40
    mean = (len(fetches) - 1) / (fetches[-1] - fetches[0])
    assert mean <= rps * 1.05, mean
    # No burst either: plus the request that opens the window, and one sent a little late.
    busiest = busiest_second(fetches)
    assert busiest <= rps + 2, busiest
    # Within --rps the checks' share goes to audits, not headers: summary.json says how many
    # blocks' hashes were confirmed and how many left out, together every block with logs.
    entry = result.summary["endpoints"][0]
    blocks = {row[0] for row in node_rows(node, FIRST, LAST)}
    assert entry["audits"] > 0
    assert entry["hashes_confirmed"] + entry["hashes_unconfirmed"] == len(blocks)


def test_with_rps_a_batch_counts_as_the_calls_it_holds(tmp_path, node, seeded):
    # Providers meter each call of a batch. Logs without blockTimestamp take theirs from batches
    # of headers, which the worker paced as one request each: the provider refused the next.
    last = FIRST + 199  # ~4,000 logs: 8 answers, and about 200 headers in their batches
    profile = replace(PROFILES["no-block-timestamp"], rps_cap=40)
    with FaultProxy(node.url, profile) as proxy:
        result = run(tmp_path, [proxy.url], rps=40, chunk_size=25, to_block=last)
        stats = proxy.stats()
    assert_equals_node(result, tmp_path, node, FIRST, last)
    assert sum(stats["block_timestamps"].values()) > 0  # the logs came without theirs
    assert stats["throttled"] == 0


@pytest.mark.slow
def test_without_rps_a_throttling_endpoint_is_slowed_down_not_hammered(tmp_path, node, seeded):
    # 200 requests of 5 blocks for an address without logs: answers so cheap that the client,
    # unpaced, asks far more than the 20 a second (20 saved up) the provider allows.
    with FaultProxy(node.url, PROFILES["rate-limited-bare"]) as proxy:
        urls = [proxy.url]
        result = run(tmp_path, urls, concurrency=2, chunk_size=5, addresses=[NOBODY])
        stats = proxy.stats()
    assert_equals_node(result, tmp_path, node, FIRST, LAST, addresses=[NOBODY])
    assert len(stats["get_logs"]) >= 200 and stats["throttled"] > 0
    # Halving brings the rate under the cap in a few throttles, and it climbs back slowly (10% a
    # step, a step per 10 successes): 6 bursts into the cap in 12 runs of two versions, 7 now
    # and then on a loaded machine. Without halving, every pause (1 s: the bucket refills with
    # 20 calls) ends in another burst into it: 9 or more.
    bursts = episodes(stats, "throttled")
    assert bursts <= 7, (bursts, stats["throttled"], stats["requests"])


@pytest.mark.parametrize("concurrency", [1, pytest.param(4, marks=pytest.mark.slow)])
def test_a_quarantined_endpoint_gets_no_more_requests(tmp_path, node, seeded, concurrency):
    billing = PROFILES["billing"]
    with (
        FaultProxy(node.url, billing) as billed,
        FaultProxy(node.url, slower_neighbour(billing)) as healthy,
    ):
        # 45 small tasks, most of them for the billed endpoint: enough to use up the quota.
        last = FIRST + 449
        odd = ("billed", billed.url)
        result = mixed_run(
            tmp_path, odd, healthy.url, to_block=last, chunk_size=10, concurrency=concurrency
        )
        requests = billed.stats()["requests"]
    assert_equals_node(result, tmp_path, node, FIRST, last)
    # Only the requests in flight when the first "capacity exceeded" came back may follow it.
    assert billing.quota_after < requests <= billing.quota_after + concurrency
    billed_stats = endpoint(result, "billed")
    assert billed_stats["state"] == "out" and "quota" in billed_stats["out_reason"]


def test_when_every_endpoint_is_out_the_run_ends_with_exit_1_and_the_ranges(tmp_path, node, seeded):
    with (
        FaultProxy(node.url, PROFILES["billing"]) as billed,
        FaultProxy(node.url, PROFILES["unauthorized"]) as denied,
    ):
        result = run(tmp_path, [f"billed={billed.url}", f"denied={denied.url}"], chunk_size=10)
        assert_served("billing", billed.stats())
        assert_served("unauthorized", denied.stats())
    assert result.exit_code == 1
    assert "every endpoint is out of service" in result.message
    assert result.summary["failed_ranges"] or result.summary["unfetched_ranges"]
    assert endpoint(result, "billed")["out_reason"]
    assert endpoint(result, "denied")["out_reason"]


@pytest.mark.parametrize(
    "name", ["lagging", pytest.param("lagging-partial", marks=pytest.mark.slow)]
)
def test_a_lagging_endpoint_is_never_asked_beyond_its_head(tmp_path, node, seeded, name):
    profile = PROFILES[name]
    head = int(node.rpc("eth_blockNumber", []), 16)
    first, behind = head - 2 * profile.lag_blocks + 1, head - profile.lag_blocks
    with (
        FaultProxy(node.url, profile) as lagging,
        FaultProxy(node.url, slower_neighbour(profile)) as healthy,
    ):
        odd = ("lagging", lagging.url)
        result = mixed_run(
            tmp_path, odd, healthy.url, from_block=first, to_block=head, chunk_size=100
        )
        asked = lagging.stats()["get_logs"]
    assert_equals_node(result, tmp_path, node, first, head)
    # It did its share below its head, and nothing past it: no answer was cut ("lagged").
    assert asked and max(b for _, b, _ in asked) <= behind
    assert all(outcome == "ok" for _, _, outcome in asked), asked


def test_a_pruned_endpoint_alone_reports_the_ranges_it_cannot_serve(tmp_path, node, seeded):
    with FaultProxy(node.url, PROFILES["pruned"]) as pruned:
        result = run(tmp_path, [f"pruned={pruned.url}"])
        refused = outcomes(pruned.stats(), "pruned")
    assert result.exit_code == 1
    failed = result.summary["failed_ranges"]
    assert failed[0]["from_block"] == FIRST and "pruned" in failed[0]["error"]
    assert refused > 0


def test_an_answer_that_trickles_in_times_out_as_a_whole(node, seeded):
    from pipeline.config.endpoints import parse_endpoints
    from pipeline.errors import ErrorKind, RpcError
    from pipeline.fetch.rpc import RpcClient

    trickling = Profile("trickling", failure_rate=1.0, failure_kinds=("trickle",))
    with FaultProxy(node.url, trickling) as proxy:
        client = RpcClient(parse_endpoints([proxy.url])[0], timeout=1.0)
        started = time.monotonic()
        with pytest.raises(RpcError) as caught:
            get_logs(client, {"fromBlock": hex(FIRST), "toBlock": hex(FIRST + 9)})
        assert caught.value.kind is ErrorKind.TIMEOUT
        assert time.monotonic() - started < 3.0  # the timeout plus at most one read
        assert proxy.stats()["injected"] == {"trickle": 1}


@pytest.mark.parametrize("bypass", [False, True])
def test_an_endpoint_is_reached_through_the_proxy_the_environment_names(
    node, monkeypatch, mocker, bypass
):
    # requests' own rules (HTTP_PROXY, NO_PROXY), read once when a client is made: not at every
    # request, which cost ~0.35 ms of CPU each.
    looked_up = mocker.spy(requests.sessions, "get_environ_proxies")
    with FaultProxy(node.url, PROFILES["healthy"]) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1" if bypass else "")
        client = RpcClient(parse_endpoints([node.url])[0], 5.0)
        assert client.chain_id() > 0 and client.block_number() >= 0
        assert proxy.stats()["requests"] == (0 if bypass else 2)
    assert looked_up.call_count == 1


def test_the_preflight_asks_its_three_questions_at_once(tmp_path, node, seeded, proxy):
    # In turn, the chain id, the head and the finalized block (the default end) took three round
    # trips before the first task: the start-up of every run against a distant provider.
    far = proxy(latency_ms=(300, 300))
    plan = resolve_plan(build_config(rpc=[far.url], output=tmp_path, env={}))
    assert plan.end_reason.startswith("the finalized block")
    arrived = far.stats()["request_times"]
    assert len(arrived) == 3 and max(arrived) - min(arrived) < 0.15, arrived
