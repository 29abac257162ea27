"""A worker or writer that crashes prints nothing itself: its traceback goes to a hidden crash log
in the output folder (without the API key), and the supervisor's one-line notice names the log."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.config.settings import build_config
from pipeline.fetch import worker as worker_module
from pipeline.fetch.worker import EXIT_CRASHED, EndpointWorker, WorkerSpec
from pipeline.messages import Notice, WorkerStarted
from pipeline.plan.runplan import Plan
from pipeline.run.supervisor import Supervisor, _Worker
from pipeline.store import writer as writer_module
from pipeline.store.layout import CRASH_DIR, worker_crash_log, writer_crash_log
from pipeline.store.manifest import Manifest
from pipeline.store.resume import Resume
from pipeline.store.writer import WriterSpec, writer_main

KEY = "abcdef0123456789abcdef0123456789"
CHAIN = 31337


@dataclass
class FakeProcess:
    """What the supervisor reads of a child process."""

    exitcode: int | None
    pid: int

    def is_alive(self) -> bool:
        return self.exitcode is None


class FakeBoard:
    def release(self, worker_id: str) -> int:
        return 2


def make_supervisor(tmp_path: Path, events: list) -> Supervisor:
    config = build_config(rpc=[f"a=http://127.0.0.1:9/v2/{KEY}"], output=tmp_path, env={})
    plan = Plan(chain_id=CHAIN, from_block=0, to_block=99, silent=())
    resume = Resume(Manifest(CHAIN, {}, False), staged=(), todo=((0, 99),))
    supervisor = Supervisor(config, plan, resume, events.append, mp.get_context("spawn"))
    supervisor.board = FakeBoard()
    supervisor.writer = FakeProcess(None, 1)
    return supervisor


def worker_spec(supervisor: Supervisor) -> WorkerSpec:
    endpoint = supervisor.config.endpoints[0]
    return WorkerSpec("a#0", endpoint, supervisor.config.log_filter, CHAIN, False, 1.0, 3,
                      output=supervisor.config.output, to_block=99, head=99)  # fmt: skip


def crashing_worker(
    tmp_path: Path, monkeypatch, error: BaseException
) -> tuple[EndpointWorker, list]:
    """A worker whose loop raises `error`; os._exit records its code instead of exiting."""
    spec = worker_spec(make_supervisor(tmp_path, []))
    worker = EndpointWorker(spec, board=None, results=None, events=None)

    def loop(client):
        raise error

    exits: list[int] = []
    monkeypatch.setattr(worker, "loop", loop)
    monkeypatch.setattr(worker_module.os, "_exit", exits.append)
    return worker, exits


def test_a_crashing_worker_prints_nothing_and_leaves_its_traceback_without_the_key(
    tmp_path, monkeypatch, capsys
):
    error = RuntimeError(f"boom while asking http://127.0.0.1:9/v2/{KEY}")
    worker, exits = crashing_worker(tmp_path, monkeypatch, error)
    worker.guarded_loop()
    assert exits == [EXIT_CRASHED]
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""
    log = worker_crash_log(tmp_path, "a", os.getpid())
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom" in text
    assert KEY not in text
    # Hidden from readers: under a dot folder, and no reader glob matches its name.
    assert log.parent == tmp_path / CRASH_DIR and CRASH_DIR.startswith(".")
    assert not list(tmp_path.glob("**/*.parquet"))


def test_a_lost_queue_ends_a_worker_quietly_without_a_crash_log(tmp_path, monkeypatch, capsys):
    worker, exits = crashing_worker(tmp_path, monkeypatch, EOFError())
    worker.guarded_loop()
    assert exits == [0]
    assert capsys.readouterr().err == ""
    assert not (tmp_path / CRASH_DIR).exists()


def test_a_worker_that_cannot_write_its_crash_log_says_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / CRASH_DIR).write_text("a file where the folder belongs")
    worker, exits = crashing_worker(tmp_path, monkeypatch, ValueError("bad"))
    worker.guarded_loop()
    assert exits == [EXIT_CRASHED]
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("worker for a crashed: ValueError: bad")


def dead_worker_notices(tmp_path: Path, exitcode: int, log_age_s: float | None) -> list[str]:
    """The notices of one supervisor pass over a worker that died with `exitcode`, having left
    a crash log `log_age_s` seconds before it started (None: no log)."""
    events: list = []
    supervisor = make_supervisor(tmp_path, events)
    spec = worker_spec(supervisor)
    started = time.time() - 5
    supervisor.workers = [_Worker(0, spec, FakeProcess(exitcode, 4321), started=started)]
    if log_age_s is not None:
        log = worker_crash_log(tmp_path, "a", 4321)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("Traceback ...")
        os.utime(log, (started - log_age_s, started - log_age_s))

    def restart(index: int, restarts: int) -> _Worker:
        events.append(WorkerStarted("a", f"a#{restarts}", 4322))
        return _Worker(index, spec, FakeProcess(None, 4322), restarts)

    supervisor._start_worker = restart
    supervisor._replace_dead_workers()
    return [e.text for e in events if isinstance(e, Notice)]


def test_the_notice_of_a_crashed_worker_is_one_line_naming_its_traceback(tmp_path):
    log = worker_crash_log(tmp_path, "a", 4321)
    assert dead_worker_notices(tmp_path, EXIT_CRASHED, log_age_s=-1) == [
        f"worker for a died (exit code 70); 2 tasks requeued, restarting it; traceback in {log}"
    ]


@pytest.mark.parametrize("log_age_s", [None, 60.0])
def test_a_worker_killed_without_a_traceback_gets_the_notice_it_always_had(tmp_path, log_age_s):
    # SIGKILL leaves no crash log; a stale log of an earlier process with the same pid is no
    # traceback of this one.
    assert dead_worker_notices(tmp_path, -9, log_age_s) == [
        "worker for a died (exit code -9); 2 tasks requeued, restarting it"
    ]


def test_a_crashing_writer_prints_nothing_and_the_runs_error_names_its_traceback(
    tmp_path, monkeypatch, capsys
):
    def broken(*args, **kwargs):
        raise KeyError("a bug in the writer")

    monkeypatch.setattr(writer_module, "Staging", broken)
    spec = WriterSpec(tmp_path, Manifest(CHAIN, {}, False), ((0, 99),), (), 100_000)
    with pytest.raises(SystemExit) as exited:
        writer_main(spec, board=None, results=None, events=None)
    assert exited.value.code == writer_module.EXIT_CRASHED
    assert capsys.readouterr().err == ""
    log = writer_crash_log(tmp_path, os.getpid())
    assert "KeyError: 'a bug in the writer'" in log.read_text()

    supervisor = make_supervisor(tmp_path, [])
    supervisor.workers = [_Worker(0, worker_spec(supervisor), FakeProcess(None, 4322))]
    supervisor.writer = FakeProcess(writer_module.EXIT_CRASHED, os.getpid())
    supervisor.writer_started = time.time() - 5
    supervisor._replace_dead_workers()
    assert supervisor.fatal == f"the writer process died (exit code 70); traceback in {log}"
