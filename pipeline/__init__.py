"""Bulk historical backfills of Ethereum event logs from many JSON-RPC endpoints into Parquet."""

from importlib import import_module

# Loaded on first use: the command line starts (and can be interrupted) before pyarrow and
# requests are imported.
_EXPORTS = {
    "BackfillConfig": "config.settings",
    "LogFilter": "config.settings",
    "build_config": "config.settings",
    "ConfigError": "errors",
    "NoEndpointError": "errors",
    "RunResult": "run.api",
    "run_backfill": "run.api",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
