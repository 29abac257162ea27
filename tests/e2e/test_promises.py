"""README promises that had no test, against the real anvil node: what a final file looks like,
the second Ctrl-C, redaction in a run that fetched and failed, --max-attempts, throttles that do
not count as attempts, --metrics-host, `demo --list-profiles`, and where a run ends (end_reason).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import backfill, plan_tasks, stored_rows
from helpers import (
    assert_equals_node,
    assert_readers_see_no_duplicate,
    lines_of,
    run_cli,
    start_cli,
    wait_for,
)

from pipeline.dev.devnet import Anvil, find_anvil
from pipeline.dev.seeding import seed_logs
from pipeline.dev.simulator import PROFILES, FaultProxy, Profile, Reply
from pipeline.store.files import ROW_GROUP_ROWS
from pipeline.store.layout import (
    LOGS_DIR,
    MANIFEST_FILE,
    STAGING_DIR,
    SUMMARY_FILE,
    parse_log_file_name,
)

FIRST = 1
RUN_S = 120  # a CLI run of these tests ends well within this, even on a busy machine


class GetLogsOnly(FaultProxy):
    """A fault proxy whose profile (latency, faults) hits eth_getLogs requests only, and only
    after the first `after` of them: the preflight's questions, the end's block hashes and the
    first `after` eth_getLogs are answered at once and correctly."""

    def __init__(self, upstream: str, profile: Profile, after: int = 0) -> None:
        super().__init__(upstream, profile)
        self._spared = after
        self._spare_lock = threading.Lock()
        self._affected = threading.local()  # each request is handled in its own thread

    def _handle(self, request, forward):
        affected = "eth_getLogs" in request.methods
        if affected:
            with self._spare_lock:
                affected, self._spared = self._spared <= 0, self._spared - 1
        self._affected.value = affected
        return super()._handle(request, forward)

    def _plan(self) -> tuple[float, str | None]:
        delay, kind = super()._plan()  # drawn for every request: the seeded sequence stays
        return (delay, kind) if getattr(self._affected, "value", False) else (0.0, None)


@pytest.fixture
def logs_proxy(node: Anvil) -> Iterator[Callable[..., GetLogsOnly]]:
    """Factory for GetLogsOnly proxies in front of the node; all are stopped after the test."""
    started: list[GetLogsOnly] = []

    def make(after: int = 0, **fields) -> GetLogsOnly:
        started.append(GetLogsOnly(node.url, Profile(**fields), after).start())
        return started[-1]

    yield make
    for p in started:
        p.stop()


def read_json(path: Path) -> dict:
    """A JSON document the run wrote."""
    return orjson.loads(path.read_bytes())


def cli_backfill(out: Path, *rpc_and_flags: str, first: int, last: int) -> list[str]:
    """A backfill command line over first..last into `out`."""
    span = ["--from-block", str(first), "--to-block", str(last), "--output", str(out)]
    return ["backfill", *rpc_and_flags, *span]


def scrape_text(host: str, port: int) -> str:
    """The metrics page served at host:port."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def free_port(*hosts: str) -> int:
    """A port that nothing listens on at any of `hosts` (right now)."""
    while True:
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        if all(bindable(host, port) for host in hosts):
            return port


def bindable(host: str, port: int) -> bool:
    """Whether host:port can be bound now."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# --- final files ---------------------------------------------------------------------------------


def test_final_files_are_sorted_aligned_named_by_block_zstd_with_block_statistics(
    tmp_path, node, seeded
):
    first, last, file_blocks = seeded.first_block, seeded.last_block, 700
    # Tasks of 300 blocks cross the 700-block windows: the writer must cut them.
    result = backfill(tmp_path, [node.url], from_block=first, to_block=last, chunk_size=300,
                      file_blocks=file_blocks)  # fmt: skip
    assert_equals_node(result, tmp_path, node, first, last)
    files = sorted((tmp_path / LOGS_DIR).glob("*.parquet"))
    assert len(files) == last // file_blocks - first // file_blocks + 1  # one a window
    ranges = []
    for path in files:
        assert re.fullmatch(r"logs__\d{12}_to_\d{12}\.parquet", path.name), path.name
        start, end = parse_log_file_name(path.name)
        assert start // file_blocks == end // file_blocks, f"{path.name} spans a multiple"
        ranges.append((start, end))
        assert_sorted_zstd_with_statistics(path, start, end)
    assert ranges[0][0] == first and ranges[-1][1] == last
    assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(ranges)), "no gap, no overlap"
    keys = [key for path in files for key in block_and_index(path)]
    assert keys == sorted(keys), "name order is block order"


def block_and_index(path: Path) -> list[tuple[int, int]]:
    """(block_number, log_index) of every row of a final file, in file order."""
    table = pq.read_table(path, columns=["block_number", "log_index"])
    return list(zip(*(table[c].to_pylist() for c in table.column_names), strict=True))


def assert_sorted_zstd_with_statistics(path: Path, start: int, end: int) -> None:
    """Rows sorted by (block_number, log_index) within the name's blocks; every column chunk
    zstd-compressed; each row group's block_number min/max recorded and true."""
    keys = block_and_index(path)
    assert keys == sorted(keys) and len(set(keys)) == len(keys), path.name
    assert keys and start <= keys[0][0] and keys[-1][0] <= end, path.name
    parquet = pq.ParquetFile(path)
    column = parquet.schema_arrow.get_field_index("block_number")
    for i in range(parquet.metadata.num_row_groups):
        group = parquet.metadata.row_group(i)
        codecs = {group.column(c).compression for c in range(group.num_columns)}
        assert codecs == {"ZSTD"}, (path.name, codecs)
        stats = group.column(column).statistics
        assert stats is not None and stats.has_min_max, path.name
        blocks = parquet.read_row_group(i, columns=["block_number"])["block_number"]
        assert (stats.min, stats.max) == (pc.min(blocks).as_py(), pc.max(blocks).as_py())


@pytest.fixture
def dense_node() -> Iterator[tuple[Anvil, int, int]]:
    """A node of its own holding more logs than one row group: (node, first block, last)."""
    with Anvil(find_anvil()) as anvil:
        seeded = seed_logs(anvil.url, blocks=200, logs=ROW_GROUP_ROWS + 8_000, seed=5)
        assert seeded.logs > ROW_GROUP_ROWS
        yield anvil, seeded.first_block, seeded.last_block


@pytest.mark.slow
def test_a_final_file_has_128k_row_groups_and_a_shorter_last_one(tmp_path, dense_node):
    anvil, first, last = dense_node
    result = backfill(tmp_path, [anvil.url], from_block=first, to_block=last, chunk_size=20)
    assert_equals_node(result, tmp_path, anvil, first, last)
    [path] = (tmp_path / LOGS_DIR).glob("*.parquet")  # one window: one file
    metadata = pq.ParquetFile(path).metadata
    groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert ROW_GROUP_ROWS == 128 * 1024
    assert groups == [ROW_GROUP_ROWS, metadata.num_rows - ROW_GROUP_ROWS], groups
    assert_sorted_zstd_with_statistics(path, first, last)


# --- the second Ctrl-C ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_ctrl_c_aborts_at_once_and_the_folder_resumes(
    tmp_path, node, seeded, logs_proxy, proxy
):
    hold_s = 40.0  # a graceful stop would wait this long for the eth_getLogs in flight
    stuck = logs_proxy(after=3, latency_ms=(hold_s * 1000, hold_s * 1000))
    last, chunk = FIRST + 599, 100
    run = start_cli(*cli_backfill(tmp_path, "--rpc", stuck.url, "--chunk-size", str(chunk),
                                  "--timeout", "120", "-q", first=FIRST, last=last),
                    text=True)  # fmt: skip
    stderr = lines_of(run.stderr)
    # Three tasks served promptly and staged, the fourth held by the proxy.
    staging = tmp_path / STAGING_DIR
    wait_for(lambda: len(list(staging.glob("frag__*"))) == 3, RUN_S, "three staged fragments")
    wait_for(lambda: stuck.stats()["methods"].get("eth_getLogs") == 4, RUN_S, "a held request")
    run.send_signal(signal.SIGINT)
    wait_for(lambda: "stopping" in stderr.text(), 30, "the stopping notice")
    assert run.poll() is None, "the first Ctrl-C waits for the request in flight"
    run.send_signal(signal.SIGINT)
    aborted = time.monotonic()
    assert run.wait(timeout=RUN_S) == 130, stderr.text()
    took = time.monotonic() - aborted
    assert took < hold_s / 3, f"the second Ctrl-C took {took:.1f}s to end the run"
    assert_readers_see_no_duplicate(tmp_path)
    counting = proxy()
    rerun = run_cli(*cli_backfill(tmp_path, "--rpc", counting.url, "--chunk-size", str(chunk),
                                  "-q", first=FIRST, last=last))  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert_equals_node(None, tmp_path, node, FIRST, last)
    served = {(a, b) for a, b, _ in stuck.stats()["get_logs"][:3]}  # (the held one: never)
    refetched = {(a, b) for a, b, _ in counting.stats()["get_logs"]}
    assert len(served) == 3 and not served & refetched, "what was staged before the abort stays"


# --- secrets -------------------------------------------------------------------------------------

SECRETS = ("SECRETKEY123", "QUERYSECRET7", "PASSWORD9", "DEADKEY12345")


def secret_url(plain_url: str, path: str, query: str = "", user: str = "") -> str:
    """`plain_url` (http://host:port) with credentials, a key in the path and a query."""
    host = plain_url.removeprefix("http://")
    return f"http://{user + '@' if user else ''}{host}{path}{'?' + query if query else ''}"


class QuotesTheUrl(FaultProxy):
    """A fault proxy whose first `quotes` eth_getLogs requests get an HTTP 500 page quoting
    `quote` (the URL the client used, key and all), as some providers' error pages do."""

    def __init__(self, upstream: str, profile: Profile, quotes: int) -> None:
        super().__init__(upstream, profile)
        self.quote = ""
        self._quotes_left = quotes
        self._quote_lock = threading.Lock()

    def _handle(self, request, forward):
        if "eth_getLogs" in request.methods:
            with self._quote_lock:
                quoting, self._quotes_left = self._quotes_left > 0, self._quotes_left - 1
            if quoting:
                return Reply(500, f"no backend for POST {self.quote}".encode())
        return super()._handle(request, forward)


@pytest.mark.slow
def test_no_secret_of_an_endpoint_url_is_printed_stored_or_served(tmp_path, node, seeded, proxy):
    # Seed 3 never fails 5 requests in a row (the circuit would open and slow the run down).
    faults = Profile(latency_ms=(5, 15), failure_rate=0.3, seed=3,
                     failure_kinds=("http_500", "http_503", "drop", "truncated"))  # fmt: skip
    flaky = QuotesTheUrl(node.url, faults, quotes=2).start()
    dead = proxy(dead=True)
    keyed = secret_url(flaky.url, "/v2/SECRETKEY123", "key=QUERYSECRET7", "user:PASSWORD9")
    flaky.quote = f"{keyed} (path /v2/SECRETKEY123?key=QUERYSECRET7, user user:PASSWORD9)"
    gone = secret_url(dead.url, "/v3/DEADKEY12345")
    try:
        places = run_with_secrets(tmp_path, node, keyed, gone)
    finally:
        flaky.stop()
    summary = orjson.loads(places[SUMMARY_FILE])
    assert [e["url"] for e in summary["endpoints"]] == [
        secret_url(flaky.url, "/v2/***", "key=***", "***"),
        secret_url(dead.url, "/v3/***"),
    ]
    assert MANIFEST_FILE in places
    leaks = [(secret, place) for secret in SECRETS for place, text in places.items()
             if secret in text]  # fmt: skip
    assert not leaks, leaks


def run_with_secrets(tmp_path: Path, node: Anvil, keyed: str, gone: str) -> dict[str, str]:
    """Run the CLI over both endpoints, verbose, with metrics; check that it fetched and failed;
    return every text it produced by where it went: output, metrics, each file it wrote."""
    out, last = tmp_path / "out", FIRST + 999
    port = free_port("127.0.0.1")
    stdout_file, stderr_file = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with stdout_file.open("wb") as stdout, stderr_file.open("wb") as stderr:
        run = start_cli(*cli_backfill(out, "--rpc", keyed, "--rpc", gone, "--chunk-size", "50",
                                      "--verbose", "--metrics-port", str(port), first=FIRST,
                                      last=last), stdout=stdout, stderr=stderr)  # fmt: skip
        pages = scrape_until_the_end(run, "127.0.0.1", port)
    assert run.returncode == 0, stderr_file.read_text()
    assert_equals_node(None, out, node, FIRST, last)
    printed = stdout_file.read_text() + stderr_file.read_text()
    # It did fetch and fail, and said so: failure lines (one quoting the URL), the dead endpoint,
    # errors by class in the metrics.
    assert "request failed" in printed and "did not answer at start" in printed, printed
    assert "no backend for POST" in printed, printed
    assert any("backfill_request_failures_total{" in page for page in pages), pages[-1:]
    places = {"stdout and stderr": printed, "metrics": "".join(pages)}
    for path in out.rglob("*"):  # summary.json, manifest.json, the chart, the Parquet files
        if path.is_file():
            places[str(path.relative_to(out))] = path.read_bytes().decode(errors="replace")
    return places


def scrape_until_the_end(run: subprocess.Popen, host: str, port: int) -> list[str]:
    """Every metrics page scraped while the run lasts (the server ends with it)."""
    pages = []
    deadline = time.monotonic() + RUN_S
    while run.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # not serving yet, or already gone
            pages.append(scrape_text(host, port))
        time.sleep(0.1)
    run.wait(timeout=RUN_S)
    return pages


# --- attempts and throttling ---------------------------------------------------------------------


@pytest.mark.slow
def test_max_attempts_gives_up_each_task_after_that_many_failed_requests(
    tmp_path, node, seeded, logs_proxy
):
    # Two endpoints that answer everything but eth_getLogs, which always fails with a 500.
    failing = [logs_proxy(failure_rate=1.0, failure_kinds=("http_500",)) for _ in range(2)]
    last, chunk = FIRST + 299, 100
    rpc = [arg for p in failing for arg in ("--rpc", p.url)]
    run = run_cli(*cli_backfill(tmp_path, *rpc, "--chunk-size", str(chunk), "--max-attempts", "2",
                                "--stall-timeout", "30", "-q", first=FIRST, last=last))  # fmt: skip
    assert run.returncode == 1, run.stderr
    asked = Counter((a, b) for p in failing for a, b, _ in p.stats()["get_logs"])
    tasks = {(t.start, t.end) for t in plan_tasks(FIRST, last, chunk)}
    assert asked == dict.fromkeys(tasks, 2), "each task was asked exactly twice"
    summary = read_json(tmp_path / SUMMARY_FILE)
    assert [(r["from_block"], r["to_block"]) for r in summary["failed_ranges"]] == [(FIRST, last)]
    reasons = summary["failed_ranges"][0]["error"].split("; ")
    assert all(r.endswith(": server_error: HTTP 500: Internal Server Error") for r in reasons)
    assert summary["unfetched_ranges"] == [] and summary["error"] is None, summary["error"]
    assert stored_rows(tmp_path) == []


@pytest.mark.slow
def test_throttled_requests_do_not_use_up_a_tasks_attempts(tmp_path, node, seeded, proxy):
    limited = proxy(PROFILES["rate-limited"])  # over 20 requests/s: HTTP 429, Retry-After: 1
    last = FIRST + 999
    run = run_cli(*cli_backfill(tmp_path, "--rpc", limited.url, "--chunk-size", "20",
                                "--concurrency", "4", "--max-attempts", "1", "-q", first=FIRST,
                                last=last))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert_equals_node(None, tmp_path, node, FIRST, last)
    stats = limited.stats()
    assert stats["throttled"] > 0, "the endpoint throttled the run"
    throttled = {(a, b) for a, b, how in stats["get_logs"] if how == "throttled"}
    served = {(a, b) for a, b, how in stats["get_logs"] if how == "ok"}
    assert throttled and throttled <= served, "each throttled task was asked again and served"
    [endpoint] = read_json(tmp_path / SUMMARY_FILE)["endpoints"]
    assert endpoint["throttled"] > 0 and endpoint["errors"].get("rate_limited", 0) > 0, endpoint


# --- metrics host --------------------------------------------------------------------------------


@pytest.mark.slow
def test_metrics_host_binds_the_metrics_server_to_that_address_only(tmp_path, node, seeded, proxy):
    steady = proxy(latency_ms=(20, 40))
    port = free_port("127.0.0.2", "127.0.0.1")
    run = start_cli(*cli_backfill(tmp_path, "--rpc", steady.url, "--chunk-size", "20",
                                  "--metrics-port", str(port), "--metrics-host", "127.0.0.2", "-q",
                                  first=FIRST, last=FIRST + 1499))  # fmt: skip

    def served_there() -> str:
        try:
            return scrape_text("127.0.0.2", port)
        except OSError:
            return ""

    page = wait_for(served_there, RUN_S, "metrics on 127.0.0.2")
    assert "backfill_blocks_total" in page
    with pytest.raises(urllib.error.URLError) as refused:
        scrape_text("127.0.0.1", port)
    assert isinstance(refused.value.reason, ConnectionRefusedError), refused.value
    assert run.wait(timeout=RUN_S) == 0, run.stderr.read().decode()
    run.stderr.close()


# --- demo --list-profiles ------------------------------------------------------------------------


def test_demo_list_profiles_lists_every_profile_and_starts_nothing(tmp_path):
    out = tmp_path / "demo"
    listed = run_cli("demo", "--list-profiles", "--output", str(out))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(PROFILES)
    for line, (name, profile) in zip(lines, PROFILES.items(), strict=True):
        assert line.split(maxsplit=1)[1].strip() == profile.description, name
    assert "starting a local anvil node" not in listed.stdout and not out.exists()


# --- where a run ends ----------------------------------------------------------------------------


def block_number(node: Anvil, tag: str) -> int:
    """The number of the node's `tag` block."""
    return int(node.rpc("eth_getBlockByNumber", [tag, False])["number"], 16)


LATEST_10 = "the latest block {head} minus 10 confirmations"


@pytest.mark.parametrize(
    "end, reason, stop",
    [
        (lambda head: {}, "the finalized block (the reorg-safe default)", "finalized"),
        (lambda head: {"to_block": "latest-10"}, LATEST_10, "head-10"),
        (lambda head: {"confirmations": 10}, LATEST_10, "head-10"),
        (lambda head: {"to_block": head - 20}, "--to-block", "head-20"),
    ],
    ids=["default", "latest-N", "confirmations", "number"],
)
@pytest.mark.slow
def test_the_summary_says_where_the_run_ended_and_why(tmp_path, node, seeded, end, reason, stop):
    head, finalized = block_number(node, "latest"), block_number(node, "finalized")
    assert finalized < head, "anvil knows a finalized block, below its head"
    last = {"finalized": finalized, "head-10": head - 10, "head-20": head - 20}[stop]
    first = head - 100
    result = backfill(tmp_path, [node.url], from_block=first, **end(head))
    summary = read_json(tmp_path / SUMMARY_FILE)
    assert summary["end_reason"] == reason.format(head=head)
    assert (summary["from_block"], summary["to_block"]) == (first, last)
    assert_equals_node(result, tmp_path, node, first, last)
