"""Seeing a run: the live display, plain lines, --quiet/--verbose, metrics and the timeline."""

from __future__ import annotations

import io
import os
import pty
import select
import signal
import subprocess
import sys
import urllib.request
from types import SimpleNamespace

import orjson
import pytest
from conftest import backfill, node_rows
from helpers import (
    assert_equals_node,
    assert_usage_error,
    cli_command,
    run_cli,
    start_cli,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from pipeline.errors import ErrorKind
from pipeline.messages import (
    Attempt,
    EndpointState,
    EndpointStatus,
    Progress,
    Reaction,
    RunStarted,
    Task,
    TaskWritten,
)
from pipeline.report import console as console_module
from pipeline.report import timeline as timeline_module
from pipeline.report.console import LiveConsole, PlainConsole, RunView, duration
from pipeline.report.metrics import Metrics, MetricsServer
from pipeline.report.timeline import Timeline, write_timeline
from pipeline.store.layout import SUMMARY_FILE, TIMELINE_FILE

CHUNK = 100


class FakeClock:
    """time.monotonic() for the console: it moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """The console's clock, in the test's hands: rates and the ETA come out exact."""
    fake = FakeClock()
    monkeypatch.setattr(console_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def test_live_display_shows_blocks_logs_rate_eta_and_each_endpoints_share_and_state():
    stream = io.StringIO()
    console = LiveConsole(stream=stream)
    console(RunStarted(1, 1000, 800, ("fast", "slow")))  # 200 blocks stored by an earlier run
    for i in range(3):
        console(TaskWritten(Task(i, 201 + 100 * i, 300 + 100 * i), "fast", 1000))
    console(TaskWritten(Task(9, 501, 600), "slow", 500))
    console(EndpointState("slow", EndpointStatus.CIRCUIT_OPEN, "5 failures", pause_s=10.0))
    console.console.print(console.render())
    text = stream.getvalue()
    assert "600/1,000 blocks" in text and "60.0%" in text
    assert "3,500 logs" in text and "logs/s" in text and "ETA" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert rows["fast"][1:4] == ["75%", "3", "3,000"]
    assert rows["slow"][1:4] == ["25%", "1", "500"]
    assert "circuit open (10s)" in text


def test_eta_follows_the_recent_pace(clock):
    view = RunView()
    view.update(RunStarted(0, 999, 1000, ("a",)))
    assert view.eta() == "?"  # no pace yet
    clock.now += 10
    view.update(TaskWritten(Task(1, 0, 99), "a", 7))
    assert view.rates() == (10.0, 0.7)  # 100 blocks and 7 logs in 10 s
    assert view.eta() == "1m30s"  # 900 blocks left at 10 blocks/s
    clock.now += 40
    view.update(TaskWritten(Task(2, 100, 199), "a", 0))
    # Only the last 30 s or so count: the start, 50 s ago, is out of the window (the average
    # since then would say 4 blocks/s, and 3m20s).
    assert view.rates()[0] == 2.5  # 100 blocks in the 40 s since the sample before
    assert view.eta() == "5m20s"  # 800 blocks left at 2.5 blocks/s
    assert [duration(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]


def test_the_status_line_comes_every_so_often_not_with_every_event(clock, capsys):
    console = PlainConsole(every=10.0)
    console(RunStarted(0, 999, 1000, ("a",)))
    for step in range(1, 26):  # 25 s, a Progress every second
        clock.now += 1
        if step == 20:
            console(TaskWritten(Task(1, 0, 99), "a", 7))
        console(Progress(100 if step >= 20 else 0, 1000, 7, 9, 1, float(step)))
    status = [line for line in capsys.readouterr().out.splitlines() if line.startswith("status")]
    assert len(status) == 2  # at 10 s and 20 s
    assert status[0].startswith("status: 0.0% of blocks (0/1,000), 0 logs") and "ETA ?" in status[0]
    assert "10.0% of blocks (100/1,000), 7 logs, 0 logs/s, ETA 3m00s; a 100% active" in status[1]


@pytest.mark.slow
def test_plain_output_prints_task_lines_and_a_periodic_status_line(
    tmp_path, node, seeded, proxy, capsys
):
    # 40 requests of 60 ms or more, one at a time: the run outlasts a few of the supervisor's
    # once-a-second Progress events, and with every=0 each one prints a status line (how often
    # is test_the_status_line_comes_every_so_often_not_with_every_event's business).
    slow = proxy(latency_ms=(60, 80))
    start = seeded.first_block
    console = PlainConsole(every=0.0)
    result = backfill(
        tmp_path, [f"slow={slow.url}"], console, from_block=start, to_block=start + 1999,
        chunk_size=50,
    )  # fmt: skip
    assert_equals_node(result, tmp_path, node, start, start + 1999)
    lines = capsys.readouterr().out.splitlines()
    assert sum("completed task" in line for line in lines) >= 40
    status = [line for line in lines if line.startswith("status: ")]
    assert len(status) >= 2, lines
    assert "of blocks (" in status[-1] and "logs/s" in status[-1] and "ETA" in status[-1]
    assert "slow 100% active" in status[-1]


@pytest.mark.slow
def test_quiet_prints_only_the_verdict_and_verbose_adds_each_failed_request(
    tmp_path, node, seeded, proxy
):
    flaky = proxy(failure_rate=0.5, seed=11, failure_kinds=("http_503",))
    steady = proxy(latency_ms=(20, 30))  # so that a run never depends on the flaky one answering
    start = seeded.first_block
    args = ["backfill", "--rpc", f"flaky={flaky.url}", "--rpc", f"steady={steady.url}"]
    args += ["--from-block", str(start)]
    args += ["--chunk-size", "100"]
    quiet = run_cli(*args, "--to-block", str(start + 499), "--output", str(tmp_path / "q"), "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.splitlines() == [quiet.stdout.strip()]
    assert quiet.stdout.startswith("complete: blocks")
    assert "completed task" not in quiet.stderr and "p95 ms" not in quiet.stderr
    verbose = run_cli(*args, "--to-block", str(start + 499), "--output", str(tmp_path / "v"), "-v")
    assert verbose.returncode == 0, verbose.stderr
    failed = [line for line in verbose.stderr.splitlines() if "request failed" in line]
    assert failed and all("server_error" in line and "-> retry" in line for line in failed)
    assert verbose.stdout.count("completed task") >= 3
    both = run_cli(*args, "--output", str(tmp_path / "b"), "-q", "-v")
    assert "--quiet and --verbose" in assert_usage_error(both, tmp_path / "b")


@pytest.mark.slow
def test_on_a_terminal_the_live_display_runs_and_the_table_follows(tmp_path, node, seeded, proxy):
    slow = proxy(latency_ms=(20, 30))
    start = seeded.first_block
    code, screen = run_in_terminal(
        "backfill", "--rpc", f"slow={slow.url}", "--from-block", str(start),
        "--to-block", str(start + 999), "--chunk-size", str(CHUNK), "--output", str(tmp_path),
    )  # fmt: skip
    assert code == 0, screen
    assert "1,000/1,000 blocks" in screen and "logs/s" in screen and "ETA" in screen
    assert "completed task" not in screen  # per-task lines are for --verbose on a terminal
    assert "p95 ms" in screen and "complete: blocks" in screen
    assert_equals_node(None, tmp_path, node, start, start + 999)


def test_metrics_count_what_the_summary_reports(tmp_path, node, seeded, proxy):
    flaky = proxy(latency_ms=(0, 5), failure_rate=0.3, seed=2, failure_kinds=("http_503", "drop"))
    steady = proxy(latency_ms=(5, 10))
    start, end = seeded.first_block, seeded.first_block + 1499
    with MetricsServer(Metrics(), 0) as server:
        assert server.server.server_address[0] == "127.0.0.1"
        result = backfill(
            tmp_path, [f"flaky={flaky.url}", f"steady={steady.url}"], server.metrics,
            from_block=start, to_block=end, chunk_size=CHUNK,
        )  # fmt: skip
        assert result.exit_code == 0
        metrics = scrape(server.port)
    total_logs = len(node_rows(node, start, end))
    for entry in result.summary["endpoints"]:
        name = entry["name"]
        assert metrics[("backfill_requests_total", name)] == entry["requests"]
        assert metrics[("backfill_request_latency_seconds_count", name)] == entry["requests"]
        assert metrics[("backfill_tasks_total", name)] == entry["tasks"]
        assert metrics[("backfill_logs_total", name)] == entry["logs"]
        for kind, count in entry["errors"].items():
            assert metrics[("backfill_request_failures_total", name, kind)] == count
    assert result.summary["endpoints"][0]["errors"], "the flaky endpoint should have failed"
    assert metrics[("backfill_rows_written_total",)] == total_logs
    assert metrics[("backfill_blocks_done",)] == metrics[("backfill_blocks_total",)] == 1500
    assert ("backfill_queue_depth",) in metrics and ("backfill_backoff_seconds", "flaky") in metrics


@pytest.mark.slow
def test_metrics_are_served_while_the_cli_runs(tmp_path, node, seeded, proxy):
    slow = proxy(latency_ms=(50, 60))
    start = seeded.first_block
    port = free_port()
    process = start_cli(
        "backfill", "--rpc", f"slow={slow.url}", "--from-block", str(start),
        "--to-block", str(start + 2999), "--chunk-size", "50", "--output", str(tmp_path),
        "--metrics-port", str(port), "-q",
    )  # fmt: skip

    def three_tasks_counted() -> dict | None:
        if process.poll() is not None:
            raise AssertionError(f"the run ended before 3 tasks: {process.stderr.read()}")
        try:
            seen = scrape(port)
        except OSError:  # not serving yet
            return None
        return seen if seen.get(("backfill_tasks_total", "slow"), 0) >= 3 else None

    seen = wait_for(three_tasks_counted, 120, "3 tasks in the metrics", interval=0.1)
    process.send_signal(signal.SIGINT)  # seen enough: a graceful stop saves the rest of the run
    assert process.wait(timeout=120) == 130, process.stderr.read()
    assert 0 < seen[("backfill_blocks_done",)] < 3000, seen
    assert seen[("backfill_endpoint_state", "slow", "active")] == 1


def test_a_taken_metrics_port_is_a_one_line_error_and_nothing_is_written(tmp_path, node):
    with MetricsServer(Metrics(), 0) as taken:
        run = run_cli(
            "backfill", "--rpc", node.url, "--output", str(tmp_path / "out"),
            "--metrics-port", str(taken.port),
        )  # fmt: skip
    assert "--metrics-port" in assert_usage_error(run, tmp_path / "out")


@pytest.mark.slow
def test_timeline_png_shows_the_fast_endpoint_doing_more(tmp_path, node, seeded, proxy):
    fast, slow = proxy(latency_ms=(1, 3)), proxy(latency_ms=(80, 120))
    flaky = proxy(latency_ms=(1, 3), failure_rate=0.4, seed=4, failure_kinds=("http_503",))
    timelines = []
    start = seeded.first_block
    result = backfill(
        tmp_path, [f"fast={fast.url}", f"slow={slow.url}", f"flaky={flaky.url}"],
        from_block=start, to_block=start + 1999, chunk_size=CHUNK,
        report=lambda event: timelines.append(event),
    )  # fmt: skip
    assert result.exit_code == 0
    png = tmp_path / TIMELINE_FILE
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert orjson.loads((tmp_path / SUMMARY_FILE).read_bytes())["timeline"] == TIMELINE_FILE
    timeline = Timeline(["fast", "slow", "flaky"], 0.0)
    for event in timelines:
        timeline.record(event)
    assert timeline.blocks["fast"] > timeline.blocks["slow"]
    assert any(outcome == "retry" for _, _, outcome in timeline.spans["flaky"])
    assert all(start > 0 and seconds >= 0 for start, seconds, _ in timeline.spans["fast"])


def test_the_chart_is_drawn_with_the_bitmap_font_of_a_pillow_before_10_1(tmp_path, monkeypatch):
    from PIL import ImageFont

    bitmap = ImageFont.load_default_imagefont()  # takes no size, and no text anchors

    def load_default(size=None):
        if size is not None:
            raise TypeError("load_default() got an unexpected keyword argument 'size'")
        return bitmap

    monkeypatch.setattr(ImageFont, "load_default", load_default)
    timeline = Timeline(["a", "b"], 0.0)
    timeline.record(Attempt("a", True, 12.0, 1, at=5.0))
    timeline.record(Attempt("b", False, 40.0, 2, at=6.0, reaction=Reaction.THROTTLE))
    assert write_timeline(timeline, tmp_path / TIMELINE_FILE) is not None
    assert (tmp_path / TIMELINE_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_pillow_no_chart_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)
    timeline = Timeline(["a"], 0.0)
    timeline.record(Attempt("a", True, 12.0, 1, at=5.0))
    assert write_timeline(timeline, tmp_path / TIMELINE_FILE) is None
    assert not (tmp_path / TIMELINE_FILE).exists()


def test_progress_events_carry_queue_depth_and_blocks_done(tmp_path, node, seeded, proxy):
    slow = proxy(latency_ms=(30, 40))
    start = seeded.first_block
    events = []
    result = backfill(
        tmp_path, [f"slow={slow.url}"], events.append, from_block=start, to_block=start + 1999,
        chunk_size=CHUNK,
    )  # fmt: skip
    assert result.exit_code == 0
    progress = [e for e in events if isinstance(e, Progress)]
    assert len(progress) >= 1
    assert all(p.blocks_total == 2000 and 0 <= p.blocks_done <= 2000 for p in progress)
    assert progress[0].queued_tasks > progress[-1].queued_tasks or len(progress) == 1
    assert [p.blocks_done for p in progress] == sorted(p.blocks_done for p in progress)


def run_in_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdout and stderr; (exit code, everything shown)."""
    main, child = pty.openpty()
    process = subprocess.Popen(
        cli_command(*args), stdout=child, stderr=child, close_fds=True,
        env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip
    os.close(child)
    chunks = []
    while True:
        ready, _, _ = select.select([main], [], [], 120)
        if not ready:
            process.kill()
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    return process.wait(timeout=30), b"".join(chunks).decode(errors="replace")


def scrape(port: int) -> dict[tuple, float]:
    """Every sample of the metrics endpoint as {(name, *label values): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, *sample.labels.values()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "le" not in sample.labels
    }


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_very_long_run_keeps_a_bounded_timeline_with_every_failure(monkeypatch):
    monkeypatch.setattr(timeline_module, "MAX_SPANS", 100)
    timeline = Timeline(["a"], 0.0)
    for i in range(1000):
        failed = i % 50 == 0
        kind = ErrorKind.TIMEOUT if failed else None
        timeline.record(Attempt("a", not failed, 5.0, i, kind, at=i + 1.0))
    spans = timeline.spans["a"]
    assert len(spans) <= 100
    assert sum(outcome != "ok" for _, _, outcome in spans) == 20
