"""Bulk historical backfills of Ethereum event logs from many JSON-RPC endpoints into Parquet."""

from .config import BackfillConfig, LogFilter, build_config
from .errors import ConfigError
from .preflight import NoEndpointError
from .run import RunResult, run_backfill

__all__ = [
    "BackfillConfig",
    "ConfigError",
    "LogFilter",
    "NoEndpointError",
    "RunResult",
    "build_config",
    "run_backfill",
]
