"""The optional TOML config file (--config): run options and per-endpoint overrides.

    rps = 10                      # any backfill option, by its flag name (from-block, chunk-size…)
    concurrency = 2

    [endpoints.paid]              # an endpoint named "paid": its URL and its own limits
    url = "https://eth-mainnet.example.com/v2/KEY"
    rps = 50
    concurrency = 8
    max-block-range = 10000

Values given on the command line win over the file, which wins over environment variables.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pipeline.config.options import ENDPOINT_KEYS, FILE_OPTIONS, Option
from pipeline.errors import ConfigError

# Key -> accepted TOML types; keys are the backfill flags' names, from the option registry.
RUN_KEYS: dict[str, tuple[type, ...]] = {name: o.toml_types for name, o in FILE_OPTIONS.items()}


def load_config_file(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Read a config file into (run options, per-endpoint settings by name); keys use the
    flag names with dashes or underscores."""
    try:
        document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read --config {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config {path} is not valid TOML: {exc}") from None
    document = {_key(k): v for k, v in document.items()}
    endpoints = document.pop("endpoints", {})
    _check_keys(document, RUN_KEYS, f"--config {path}")
    if not isinstance(endpoints, dict):
        raise ConfigError(f"--config {path}: [endpoints] must be a table of named endpoints")
    for name, settings in endpoints.items():
        if not isinstance(settings, dict):
            raise ConfigError(f"--config {path}: [endpoints.{name}] must be a table")
        endpoints[name] = settings = {_key(k): v for k, v in settings.items()}
        _check_keys(settings, ENDPOINT_KEYS, f"--config {path} [endpoints.{name}]")
    run = {FILE_OPTIONS[key].dest: _as_given(FILE_OPTIONS[key], v) for key, v in document.items()}
    return run, endpoints


def _as_given(option: Option, value: Any) -> Any:
    """The value as the command line would give it: one string for a repeatable option is a
    list of one."""
    return [value] if option.multiple and isinstance(value, str) else value


def _key(name: str) -> str:
    return name.replace("-", "_")


def _check_keys(table: dict, allowed: dict[str, tuple[type, ...]], where: str) -> None:
    for key, value in table.items():
        flag = key.replace("_", "-")
        if key not in allowed:
            known = ", ".join(sorted(k.replace("_", "-") for k in allowed))
            raise ConfigError(f"{where}: unknown key {flag!r} (known: {known})")
        types = allowed[key]
        wrong = isinstance(value, bool) and bool not in types
        if wrong or not isinstance(value, types):
            raise ConfigError(f"{where}: {flag} has the wrong type ({type(value).__name__})")
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {flag} must be a list of strings")
