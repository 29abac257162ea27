"""--engine ray: the same pipeline on a Ray cluster. The supervisor is the multiprocessing one,
with its board, workers and writer started as actors (see pipeline.run.rayactors): it watches,
restarts, requeues and reports exactly as it does for processes.

Where things run: the board, the event buffer and the writer on the driver's node (the writer
writes the output there, and the driver finishes it); one actor per endpoint, spread over the
nodes by a placement group. Tables travel from the endpoint actors to the writer through Ray's
object store.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from pipeline.config.settings import BackfillConfig
from pipeline.errors import ConfigError
from pipeline.messages import ProcessStarted, Report, RunStarted, WorkerStarted
from pipeline.plan.chunks import ChunkPlan
from pipeline.plan.runplan import Plan
from pipeline.run.rayactors import (
    ActorRun,
    Blocking,
    BoardActor,
    EndpointActor,
    EventBuffer,
    EventChannel,
    WriterActor,
    WriterInbox,
)
from pipeline.run.supervisor import (
    MAX_RESTARTS_PER_ENDPOINT,
    RESULT_QUEUE_PER_WORKER,
    Supervisor,
    _Worker,
)
from pipeline.store.resume import Resume

CONNECT_CHECK_S = 5.0
# A sliver of a CPU per endpoint: a placement group's bundles must hold some resource, and an
# endpoint's actor mostly waits on the network (a head started with --num-cpus=0 gets none).
ENDPOINT_CPUS = 0.01
PLACEMENT_TIMEOUT_S = 60.0
SPARE_BOARD_THREADS = 8  # the writer's and the driver's calls, beside the fetch threads'
SPARE_WRITER_THREADS = 4  # run(), finish() and pid() beside the store() calls


class NoRoom(Exception):
    """The cluster cannot place the endpoints' actors."""


class RayEngine:
    """A connection to a Ray cluster (a new local one by default) for the runs started on it."""

    def __init__(self, address: str | None) -> None:
        self.owned = not ray.is_initialized()  # a library caller's own connection stays open
        if self.owned:
            connect(address)

    def supervisor(
        self, config: BackfillConfig, plan: Plan, resume: Resume, report: Report
    ) -> Supervisor:
        """The supervisor of one run on the cluster."""
        return RaySupervisor(config, plan, resume, report)

    def close(self) -> None:
        """Disconnect (and stop the local instance, when it started one)."""
        if self.owned and ray.is_initialized():
            ray.shutdown()


def connect(address: str | None) -> None:
    """Join the cluster at `address` (None: start a local instance); ConfigError if it cannot."""
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address is None:
        # "local": never the cluster some other program started on this machine.
        ray.init(address="local", include_dashboard=False, **quiet)
        return
    if address.startswith("ray://"):
        raise ConfigError(
            f"--ray-address {address}: Ray Client addresses are not supported; run the "
            "backfill on a node of the cluster (e.g. with ray job submit) and pass HOST:PORT "
            "or auto"
        )
    if address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot join the Ray cluster at {address} ({first}): check --ray-address"
        ) from None


def _check_reachable(address: str) -> None:
    """Fail fast (ray.init would retry for a minute) when nothing listens at HOST:PORT."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address must be HOST:PORT or auto, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_CHECK_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({reason}): start it "
            "(ray start --head) or fix --ray-address"
        ) from None


def _absolute(output: Any) -> Any:
    """The output location as actors on any node must see it: a local path made absolute (a
    relative one would resolve against each actor's working folder)."""
    return output.absolute() if isinstance(output, Path) else output


class RaySupervisor(Supervisor):
    """The multiprocessing supervisor with actors for processes; see the module docstring."""

    def __init__(self, config: BackfillConfig, plan: Plan, resume: Resume, report: Report) -> None:
        config = replace(config, output=_absolute(config.output))
        super().__init__(config, plan, resume, report, ctx=None)
        self.actors: list[Any] = []  # every actor started, killed at the end
        self.endpoint_actors: list[Any] = []
        self.board_actor: Any = None
        self.writer_actor: Any = None
        self.here: NodeAffinitySchedulingStrategy | None = None
        self.group: PlacementGroup | None = None

    def run(self) -> None:
        """Start the actors, watch until the work settles, then shut down in order."""
        names = tuple(e.name for e in self.config.endpoints)
        self.report(RunStarted(self.plan.from_block, self.plan.to_block, self.todo, names))
        node = ray.get_runtime_context().get_node_id()
        self.here = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
        threads = sum(e.threads for e in self.config.endpoints)
        try:
            plan = ChunkPlan.over(self.resume.todo, self.config.chunk_size)
            # Claims and waits block a board thread each; a dead worker's may still be waiting.
            board_threads = (MAX_RESTARTS_PER_ENDPOINT + 1) * threads + SPARE_BOARD_THREADS
            self.board_actor = self._actor(BoardActor, board_threads).remote(plan, list(names))
            self.board = Blocking(self.board_actor)
            self.report(ProcessStarted("queue", self.board.pid()))
            self.events = EventChannel(self._actor(EventBuffer, 1).remote())
            capacity = RESULT_QUEUE_PER_WORKER * len(names)
            writer_threads = threads + SPARE_WRITER_THREADS
            self.writer_actor = self._actor(WriterActor, writer_threads).remote(
                _absolute(self.staging), capacity
            )
            self.results = WriterInbox(self.writer_actor)
            self._start_verifier()
            self.writer = self._start_writer()
            self.endpoint_actors = self._endpoint_actors(len(names))
            self.workers = [self._start_worker(i, 0) for i in range(len(names))]
            self._watch()
            self._shutdown()
        except RayActorError:
            self._abandon("an actor holding the run's board, writer or events died")
        except NoRoom as exc:
            self._abandon(str(exc))
        finally:
            self.seconds = time.monotonic() - self.started
            if self.verifier is not None:
                self.verifier.close()
            self._release()

    def _release(self) -> None:
        """Kill the run's actors and free their placement (a lost cluster has nothing left)."""
        with contextlib.suppress(RayError, ConnectionError):
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
            if self.group is not None:
                remove_placement_group(self.group)

    def _actor(self, cls: Any, threads: int) -> Any:
        """`cls` as an actor on the driver's node, with `threads` threads, taking no CPU (it
        mostly waits)."""
        options = cls.options(num_cpus=0, max_concurrency=threads, scheduling_strategy=self.here)
        return _Tracked(options, self.actors)

    def _endpoint_actors(self, count: int) -> list[Any]:
        """One actor per endpoint, each in its own bundle of a SPREAD placement group: on
        distinct nodes as far as there are nodes, and moved with the bundle when its node is
        lost. Ray restarts a dead one as often as the supervisor restarts a worker process."""
        self.group = placement_group([{"CPU": ENDPOINT_CPUS}] * count, strategy="SPREAD")
        try:
            ray.get(self.group.ready(), timeout=PLACEMENT_TIMEOUT_S)
        except GetTimeoutError:
            raise NoRoom(
                f"the Ray cluster found no room for {count} endpoint actors "
                f"({ENDPOINT_CPUS} CPU each) in {PLACEMENT_TIMEOUT_S:.0f}s"
            ) from None
        actors = []
        for index in range(count):
            bundle = PlacementGroupSchedulingStrategy(
                self.group, placement_group_bundle_index=index
            )
            actor = EndpointActor.options(
                num_cpus=ENDPOINT_CPUS,
                max_concurrency=2,  # run(), and whereabouts() beside it
                max_restarts=MAX_RESTARTS_PER_ENDPOINT,
                scheduling_strategy=bundle,
            ).remote()
            self.actors.append(actor)
            actors.append(actor)
        return actors

    def _start_writer(self) -> ActorRun:
        ref = self.writer_actor.run.remote(self._writer_spec(), self.board_actor, self.events)
        self.writer_started = time.time()
        pid = ray.get(self.writer_actor.pid.remote())
        self.report(ProcessStarted("writer", pid))
        return ActorRun(self.writer_actor, ref, pid)

    def _start_worker(self, index: int, restarts: int) -> _Worker:
        actor = self.endpoint_actors[index]
        spec = self._worker_spec(index, restarts)
        started = time.time()
        try:
            pid, node = ray.get(actor.whereabouts.remote())  # after a restart: once it is back
        except RayActorError:  # out of restarts: run() fails too, and the worker is retired
            pid, node = 0, ""
        ref = actor.run.remote(spec, self.board_actor, self.events, self.writer_actor)
        self.report(WorkerStarted(spec.endpoint.name, spec.worker_id, pid, node))
        return _Worker(index, spec, ActorRun(actor, ref, pid), restarts, started=started)


class _Tracked:
    """Actor options whose remote() also records the actor, so that the run kills it at its end."""

    def __init__(self, options: Any, actors: list[Any]) -> None:
        self._options, self._actors = options, actors

    def remote(self, *args: Any) -> Any:
        """Create the actor."""
        actor = self._options.remote(*args)
        self._actors.append(actor)
        return actor
