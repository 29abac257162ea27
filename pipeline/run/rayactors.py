"""The Ray engine's actors, each a thin shell around the multiprocessing engine's own code: the
task board, an endpoint's worker, the writer, and the buffer that carries events to the driver.

Only pipeline.run.rayengine imports this module, and only once --engine ray was chosen.
"""

from __future__ import annotations

import itertools
import os
import queue
import time
from collections import deque
from pathlib import Path
from typing import Any

import pyarrow as pa
import ray
from ray.exceptions import RayActorError, RayError

from pipeline.fetch.spec import WorkerSpec
from pipeline.fetch.worker import worker_main
from pipeline.messages import Distrust, Event, FetchedBatch, Task, Verdict
from pipeline.plan.board import TaskBoard
from pipeline.store.files import write_result
from pipeline.store.layout import incoming_path
from pipeline.store.writer import WriterSpec, writer_main

WriterMessage = FetchedBatch | Verdict | Distrust  # what the writer's run() takes in
ACTOR_LOST = 1  # the exit code the supervisor is told for an actor that died (no code is known)
EVENT_POLL_S = 0.05


class Blocking:
    """An actor handle whose method calls wait for their answer, as a local object's do: the
    worker and writer code calls the board actor exactly as it calls the Manager's board."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # pickling looks up dunders before _handle exists
            raise AttributeError(name)
        method = getattr(self._handle, name)
        return lambda *args, **kwargs: ray.get(method.remote(*args, **kwargs))


@ray.remote
class BoardActor(TaskBoard):
    """The task board, the only source of truth for leases, as a threaded actor (claims block)."""

    def pid(self) -> int:
        """The actor's process id (reported like the queue process's)."""
        return os.getpid()


@ray.remote
class EventBuffer:
    """Events from every actor, in order per sender, until the driver takes them. One thread:
    Ray runs a sender's calls to a single-threaded actor in the order they were made."""

    def __init__(self) -> None:
        self._events: list[Event] = []

    def put(self, event: Event) -> None:
        """Keep one event."""
        self._events.append(event)

    def sync(self) -> None:
        """Nothing: the answer comes once every event its caller sent before is kept."""

    def take(self) -> list[Event]:
        """Every event kept so far (the driver polls)."""
        events, self._events = self._events, []
        return events


class EventChannel:
    """The run's EventQueue over Ray: senders put without waiting for an answer; the driver gets
    them in batches, with queue.Queue's get/get_nowait so that the supervisor's loop is the same."""

    def __init__(self, buffer: Any) -> None:
        self._buffer = buffer
        self._taken: deque[Event] = deque()

    def put(self, event: Event) -> None:
        """Send one event (fire and forget, as a put on an unbounded queue)."""
        self._buffer.put.remote(event)

    def flush(self) -> None:
        """Wait until every event this process sent is kept: the driver, seeing the sender
        finish, must find all of them (another caller's calls may overtake unanswered ones)."""
        ray.get(self._buffer.sync.remote())

    def get(self, timeout: float = 0.0) -> Event:
        """The next event, waiting up to `timeout` seconds; raises queue.Empty."""
        deadline = time.monotonic() + timeout
        while not self._taken:
            self._taken.extend(ray.get(self._buffer.take.remote()))
            if self._taken or time.monotonic() >= deadline:
                break
            time.sleep(EVENT_POLL_S)
        if not self._taken:
            raise queue.Empty
        return self._taken.popleft()

    def get_nowait(self) -> Event:
        """The next event if one is there; raises queue.Empty."""
        return self.get(0.0)

    def settle(self, names: set[str], timeout: float) -> bool:
        """Nothing to wait for: a sender flushes before its run returns."""
        return True


@ray.remote
class WriterActor:
    """The writer: writer_main in run(), fed by store() calls that each bring one table out of
    the object store, as result files and the result queue feed the writer process."""

    def __init__(self, output: Path, capacity: int) -> None:
        self._output = output
        self._results: queue.Queue[WriterMessage | None] = queue.Queue(capacity)
        # Names of the incoming files: a task can be delivered twice at once (by a worker that
        # died and by the one that took its lease over), so its id alone would not do.
        self._names = itertools.count()

    def pid(self) -> int:
        """The actor's process id."""
        return os.getpid()

    def run(self, spec: WriterSpec, board: Any, events: EventChannel) -> int:
        """Store batches until finish(), then compact; the writer process's exit code."""
        try:
            writer_main(spec, Blocking(board), self._results, events)
        except SystemExit as exc:
            return int(exc.code or 0)
        finally:
            events.flush()
        return 0

    def store(
        self, task: Task, endpoint: str, table: pa.Table, headed: bool = False
    ) -> tuple[int, str] | None:
        """Queue one fetched table for run(), waiting while the queue is full; (errno,
        strerror) if it cannot be written."""
        path = incoming_path(self._output, os.getpid(), next(self._names))
        try:
            write_result(table, path)
        except OSError as exc:
            path.unlink(missing_ok=True)
            return exc.errno or 0, exc.strerror or str(exc)
        self._results.put(FetchedBatch(task, endpoint, str(path), table.num_rows, headed))
        return None

    def put(self, message: WriterMessage | None, timeout: float) -> bool:
        """Queue a verifier's message for run(), or None: compact and stop; False if the queue
        stayed full for `timeout` s."""
        try:
            self._results.put(message, timeout=timeout)
        except queue.Full:
            return False
        return True


class ObjectStoreDelivery:
    """An EndpointWorker's delivery under Ray: the table goes into the object store and the
    writer actor takes it from there. It waits until the writer has queued it, as a worker
    process waits on a full result queue, so a slow writer slows the fetchers."""

    def __init__(self, writer: Any, endpoint: str) -> None:
        self._writer = writer
        self._endpoint = endpoint

    def __call__(self, task: Task, table: pa.Table, headed: bool) -> None:
        """Hand one task's table to the writer; raises OSError when it cannot be written."""
        stored = self._writer.store.remote(task, self._endpoint, ray.put(table), headed)
        failed = ray.get(stored)
        if failed is not None:
            raise OSError(*failed)


@ray.remote
class EndpointActor:
    """One endpoint's worker: worker_main with its rate control, breaker and window, threads
    and all. Ray restarts the actor when its process dies; the driver then requeues the dead
    run's leases and starts run() again under a new worker id."""

    # Retried until the actor is up: after a restart, a call made before it is back would
    # fail; run() (never retried: the driver decides) is started after this answered.
    @ray.method(max_task_retries=-1)
    def whereabouts(self) -> tuple[int, str]:
        """(the actor's process id, the Ray node it runs on)."""
        return os.getpid(), ray.get_runtime_context().get_node_id()

    def run(self, spec: WorkerSpec, board: Any, events: EventChannel, writer: Any) -> int:
        """Fetch until the board closes; the worker process's exit code (EXIT_RETIRED when the
        endpoint was retired)."""
        deliver = ObjectStoreDelivery(writer, spec.endpoint.name)
        try:
            worker_main(spec, Blocking(board), None, events, deliver)
        except SystemExit as exc:
            return int(exc.code or 0)
        finally:
            events.flush()
        return 0


class ActorRun:
    """An actor's run() call as the supervisor sees a child process: alive, exit code, pid,
    kill and join, so that its watching, restarting and shutdown code serves both engines."""

    def __init__(self, actor: Any, ref: ray.ObjectRef, pid: int) -> None:
        self.actor, self.ref, self.pid = actor, ref, pid

    def is_alive(self) -> bool:
        """True while run() has not returned (and the actor has not died)."""
        ready, _ = ray.wait([self.ref], timeout=0)
        return not ready

    @property
    def exitcode(self) -> int | None:
        """None while running; run()'s code once it returned; ACTOR_LOST if the actor died."""
        if self.is_alive():
            return None
        try:
            return ray.get(self.ref)
        except RayError:  # the actor died (ActorDiedError) or its call failed
            return ACTOR_LOST

    def kill(self) -> None:
        """End the actor for good (no restart)."""
        ray.kill(self.actor, no_restart=True)

    def join(self, timeout: float | None = None) -> None:
        """Wait up to `timeout` seconds for run() to end."""
        ray.wait([self.ref], timeout=timeout)


class WriterInbox:
    """The driver's end of the result queue: the supervisor's shutdown puts its final None."""

    def __init__(self, writer: Any) -> None:
        self._writer = writer

    def put(self, item: WriterMessage | None, timeout: float | None = None) -> None:
        """A verifier's Verdict or Distrust, or None: ask the writer to finish (batches come
        through store()); raises queue.Full if its queue stayed full for `timeout` s, and
        ConnectionError once the writer actor is gone."""
        try:
            if not ray.get(self._writer.put.remote(item, timeout)):
                raise queue.Full
        except RayActorError as exc:
            raise ConnectionError("the writer actor is gone") from exc
