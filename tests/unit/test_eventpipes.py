"""The children's events reach the supervisor through a pipe each: in order, without the child
ever waiting for the supervisor, and a child killed at any instant ends only its own pipe."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal

from pipeline.messages import Notice
from pipeline.run.eventpipes import EventPipes, EventSender

CTX = mp.get_context("forkserver")


def send_numbered(sender: EventSender, count: int, prefix: str = "") -> None:
    """A child: `count` events, numbered after `prefix`, as fast as it can."""
    for number in range(count):
        sender.put(Notice(f"{prefix}{number}"))


def send_forever(sender: EventSender) -> None:
    """A child that sends until it is killed (large events: a kill often lands mid-write)."""
    number = 0
    while True:
        sender.put(Notice(f"{number} " + "x" * 50_000))
        number += 1


def start(pipes: EventPipes, name: str, target, *args) -> mp.process.BaseProcess:
    sender, copy = pipes.open(name)
    process = CTX.Process(target=target, args=(sender, *args), name=name)
    process.start()
    pipes.started(copy)
    return process


def drain(pipes: EventPipes) -> list[str]:
    texts = []
    while True:
        try:
            texts.append(pipes.get_nowait().text)
        except queue.Empty:
            return texts


def test_a_childs_events_arrive_all_and_in_order_though_nobody_reads_meanwhile():
    pipes = EventPipes()
    try:
        # Far more than a pipe holds (64 KiB): the child finishes while the supervisor does
        # not read, as when it is busy joining another child.
        children = [start(pipes, f"c{i}", send_numbered, 20_000, f"c{i}:") for i in range(2)]
        for child in children:
            child.join(60)
            assert child.exitcode == 0
        assert pipes.settle({"c0", "c1"}, 30)
        texts = drain(pipes)
        for i in range(2):
            mine = [t for t in texts if t.startswith(f"c{i}:")]
            assert mine == [f"c{i}:{n}" for n in range(20_000)]
        assert len(texts) == 40_000
    finally:
        pipes.close()


def test_a_child_killed_mid_write_ends_its_own_pipe_only():
    pipes = EventPipes()
    try:
        killed = start(pipes, "killed", send_forever)
        calm = start(pipes, "calm", send_numbered, 100)
        texts = [pipes.get(timeout=30).text]
        while not texts[-1].startswith("3 "):  # killed in its stride, not before its first
            texts.append(pipes.get(timeout=30).text)
        os.kill(killed.pid, signal.SIGKILL)
        killed.join(30)
        calm.join(30)
        assert pipes.settle({"killed", "calm"}, 30), "a pipe was not seen to end"
        texts += drain(pipes)
        assert [t for t in texts if " " not in t] == [str(n) for n in range(100)]
        numbers = [int(t.split(" ", 1)[0]) for t in texts if " " in t]
        assert numbers == list(range(len(numbers)))  # whole events, none twice, in order
    finally:
        pipes.close()
