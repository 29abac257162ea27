"""Which engine runs a backfill's supervisor: processes on this machine (the default), or actors on
a Ray cluster. Ray is imported only when it is chosen: importing it costs seconds."""

from __future__ import annotations

import multiprocessing as mp
from typing import Protocol

from pipeline.config.options import Engine
from pipeline.config.settings import BackfillConfig
from pipeline.errors import ConfigError
from pipeline.messages import Report
from pipeline.plan.runplan import Plan
from pipeline.run.lifecycle import process_context
from pipeline.run.supervisor import Supervisor
from pipeline.store.resume import Resume

RAY_MISSING = (
    "--engine ray needs Ray, which is not installed: pip install -e '.[ray]' "
    "(or pip install 'ray>=2.9')"
)


class RunEngine(Protocol):
    """Starts a run's supervisor on its machinery, and lets that machinery go at the end."""

    def supervisor(
        self, config: BackfillConfig, plan: Plan, resume: Resume, report: Report
    ) -> Supervisor:
        """The supervisor of one run (not yet started)."""

    def close(self) -> None:
        """Release what the engine holds (a Ray connection); idempotent."""


class LocalEngine:
    """The default: a process per endpoint and a writer process on this machine."""

    def __init__(self) -> None:
        self.ctx: mp.context.BaseContext = process_context()

    def supervisor(
        self, config: BackfillConfig, plan: Plan, resume: Resume, report: Report
    ) -> Supervisor:
        """The multiprocessing supervisor."""
        return Supervisor(config, plan, resume, report, self.ctx)

    def close(self) -> None:
        """Nothing to release: the supervisor stops its own processes."""


def open_engine(config: BackfillConfig) -> RunEngine:
    """The engine config.engine names, ready to run; raises ConfigError (nothing started) when
    Ray is missing or its cluster cannot be reached."""
    if config.engine != Engine.RAY:
        if config.ray_address is not None:
            raise ConfigError("--ray-address is for --engine ray: add --engine ray or drop it")
        return LocalEngine()
    try:
        import ray  # noqa: F401 - only whether it is there; the engine module uses it
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    from pipeline.run.rayengine import RayEngine

    return RayEngine(config.ray_address)
