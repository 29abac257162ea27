"""Every `backfill` option, written once: the command line, the TOML keys of --config and the
checks in build_config are all derived from OPTIONS.

Adding an option is one entry here (plus a BackfillConfig field when the run needs the value):
the flag, its help and default appear in `pipeline backfill --help`, the key is accepted in the
config file, and build_config checks the value and passes it on under `dest`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import ConfigError
from pipeline.store.uri import parse_output

# Without --chunk-size, the size of the first task: nothing is known of the chain's density yet.
FIRST_TASK_BLOCKS = 100
DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_STALL_TIMEOUT_S = 60.0
DEFAULT_MAX_CONCURRENCY = 8
DEFAULT_FILE_BLOCKS = 100_000
DEFAULT_AUDIT_RATE = 0.02
DEFAULT_OUTPUT = Path("output")
MAX_CONCURRENCY = 64


class Engine(StrEnum):
    """What runs the pipeline: processes on this machine, or actors on a Ray cluster."""

    MULTIPROCESSING = "multiprocessing"
    RAY = "ray"


NUMBER = (int, float)  # TOML integers are welcome where a float is expected


@dataclass(frozen=True)
class Option:
    """One `backfill` option: its flag, how it is parsed and shown, its default and its bounds."""

    name: str  # the flag without dashes, underscored: also the TOML key (dashes or underscores)
    help: str
    type: type = str  # str, int, float, Path, or bool for an on/off flag
    default: Any = None
    multiple: bool = False  # repeatable on the command line, a list (or one string) in the file
    metavar: str | None = None
    short: str | None = None  # a one-letter alias such as "-q"
    parameter: str | None = None  # the command's and build_config's name, when not `name`
    # build_config takes the option as the next item of this sequence (topic0..3 as `topics`)
    group: str | None = None
    path: Literal["dir", "file"] | None = None  # for type Path: which kind it must name
    file_types: tuple[type, ...] | None = None  # TOML types, when not those of `type`
    in_file: bool = True  # accepted as a top-level key of --config
    # Consumed by the command itself (display, metrics, the file), not passed to build_config;
    # its bounds are then checked by click, and shown in --help.
    command_only: bool = False
    at_least: int | None = None
    at_most: int | None = None
    positive: bool = False  # strictly above zero
    choices: tuple[str, ...] | None = None  # the only values a str option takes
    convert: Callable[[Any], Any] | None = None  # parses a str option's value (one-line errors)

    @property
    def flag(self) -> str:
        """The long flag, e.g. --chunk-size."""
        return "--" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        """The command's parameter and build_config's keyword for this option."""
        return self.parameter or self.name

    @property
    def is_flag(self) -> bool:
        """Whether the option is an on/off switch that takes no value."""
        return self.type is bool

    @property
    def show_default(self) -> bool:
        """Whether --help shows the default: only a real value, not "unset" or "off"."""
        return self.default is not None and not self.is_flag and not self.multiple

    @property
    def toml_types(self) -> tuple[type, ...]:
        """The TOML value types accepted for this key in --config."""
        if self.file_types is not None:
            return self.file_types
        if self.multiple:
            return (list, str)
        return {float: NUMBER, Path: (str,)}.get(self.type, (self.type,))

    def check(self, value: Any, where: str = "") -> Any:
        """`value` in the option's type, or a one-line ConfigError; `where` names the context
        (such as an endpoint) in the message."""
        if self.choices and value is not None and value not in self.choices:
            self._fail(f"must be one of {', '.join(self.choices)}", value, where)
        if value is not None and self.convert is not None:
            return self.convert(value)
        if value is None or self.type not in (int, float, Path):
            return value
        if self.type is Path:
            return Path(value)
        number = self._number(value, where)
        rule = self._broken_rule(number)
        if rule:
            self._fail(f"must be {rule}", value, where)
        return number

    def _number(self, value: Any, where: str) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self._fail("must be a number", value, where)
        if self.type is float:
            return float(value)
        if isinstance(value, float) and not value.is_integer():
            self._fail("must be a whole number", value, where)
        return int(value)

    def _broken_rule(self, number: float) -> str | None:
        """The bound `number` breaks, in words, or None."""
        if self.positive and not number > 0:
            return "positive"
        low, high = self.at_least, self.at_most
        if (low is not None and number < low) or (high is not None and number > high):
            return f"at least {low}" if high is None else f"{low}-{high}"
        return None

    def _fail(self, rule: str, value: Any, where: str) -> None:
        context = f" ({where})" if where else ""
        raise ConfigError(f"{self.flag} {rule}{context}, got {value!r}")


OPTIONS: tuple[Option, ...] = (
    Option(
        "rpc",
        "JSON-RPC endpoint, repeatable (default: $RPC_URLS, comma-separated, else three public "
        "Sepolia endpoints).",
        multiple=True,
        default=(),
        metavar="[NAME=]URL",
    ),
    # Block numbers may be written as TOML integers or as strings (hex, tags, latest-N).
    Option("from_block", "First block.", default="0", file_types=(int, str)),
    Option(
        "to_block",
        "Last block: a number, latest, latest-N, safe or finalized (default: finalized, or the "
        "head minus the chain's confirmation depth where no endpoint knows it).",
        file_types=(int, str),
    ),
    Option(
        "confirmations",
        "Stop this many blocks below the head (the same as --to-block latest-N).",
        type=int,
    ),
    Option(
        "address",
        "Contract address, repeatable (default: $CONTRACT_ADDRESS).",
        multiple=True,
        default=(),
        parameter="addresses",
    ),
    Option(
        "topic0",
        "Event signature topic, repeatable, ORed (default: $EVENT_TOPIC).",
        multiple=True,
        default=(),
        group="topics",
    ),
    Option("topic1", "Topic 1 values, ORed.", multiple=True, default=(), group="topics"),
    Option("topic2", "Topic 2 values, ORed.", multiple=True, default=(), group="topics"),
    Option("topic3", "Topic 3 values, ORed.", multiple=True, default=(), group="topics"),
    Option(
        "event",
        "Event to decode into OUT/events/, repeatable: a signature such as "
        "'Transfer(address indexed from, address indexed to, uint256 value)'. Events set the "
        "topic0 filter (the OR of their selectors) unless --topic0 is given.",
        multiple=True,
        default=(),
        metavar="SIGNATURE",
        parameter="events",
    ),
    Option(
        "abi",
        "Contract ABI (JSON file) whose every event is decoded, repeatable; like --event.",
        multiple=True,
        default=(),
        metavar="FILE.json",
        parameter="abis",
    ),
    # Unset: adaptive (pipeline.plan.chunks): FIRST_TASK_BLOCKS is only the first task's size.
    Option(
        "chunk_size",
        f"Blocks per task (default: adaptive, starting at {FIRST_TASK_BLOCKS}: each task is "
        "sized from the logs per block seen so far; a value pins every task to it).",
        type=int,
        at_least=1,
    ),
    Option(
        "output",
        "Output folder, or object storage: s3://BUCKET/PREFIX, gs://BUCKET/PREFIX (file:// is a "
        "folder).",
        default=DEFAULT_OUTPUT,
        metavar="DIR|URI",
        convert=parse_output,
    ),
    Option(
        "staging",
        "Local folder staging fragments when --output is object storage (default: a folder of "
        "~/.cache named after the URI).",
        type=Path,
        path="dir",
    ),
    Option(
        "max_attempts",
        "Attempts per task, across all endpoints, before it is reported as failed.",
        type=int,
        default=DEFAULT_MAX_ATTEMPTS,
        at_least=1,
    ),
    Option(
        "hex",
        "Write 0x hex strings instead of raw bytes.",
        type=bool,
        default=False,
        parameter="hex_output",
    ),
    Option(
        "timeout",
        "Seconds before one request is given up.",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        positive=True,
    ),
    Option(
        "stall_timeout",
        "End the run when every endpoint has failed for this many seconds.",
        type=float,
        default=DEFAULT_STALL_TIMEOUT_S,
        positive=True,
    ),
    Option(
        "overwrite",
        "Start over: delete what an earlier run left in --output (by default a run resumes).",
        type=bool,
        default=False,
    ),
    Option(
        "file_blocks",
        "Final files never span a multiple of this many blocks.",
        type=int,
        default=DEFAULT_FILE_BLOCKS,
        at_least=1,
    ),
    # rps and concurrency are per-endpoint limits: build_config checks them for each endpoint,
    # after the file's [endpoints.NAME] overrides.
    Option(
        "concurrency",
        "Requests in flight at once per endpoint, pinned (default: adaptive per endpoint, from "
        "1 up to --max-concurrency, found from its latency, throttles and errors).",
        type=int,
        at_least=1,
        at_most=MAX_CONCURRENCY,
    ),
    Option(
        "max_concurrency",
        "The most requests in flight per endpoint that the adaptive limit may reach.",
        type=int,
        default=DEFAULT_MAX_CONCURRENCY,
        at_least=1,
        at_most=MAX_CONCURRENCY,
    ),
    Option(
        "rps",
        "Requests per second per endpoint at most (default: as fast as each answers; lowered "
        "automatically when an endpoint throttles).",
        type=float,
        positive=True,
    ),
    Option(
        "audit_rate",
        "Share of tasks fetched again from another endpoint (or read from the block receipts) "
        "and compared row for row; a new endpoint's first answers and a suspect's are all "
        "audited. 0 turns audits off.",
        type=float,
        default=DEFAULT_AUDIT_RATE,
        at_least=0,
        at_most=1,
    ),
    Option(
        "verify",
        "Check every answer before it is stored: head proofs, block hashes against other "
        "endpoints' headers, blooms, audits (see --audit-rate). On by default; --no-verify "
        "trusts every answer.",
        type=bool,
        default=True,
    ),
    Option(
        "all_hashes",
        "With --rps: confirm the hash of every stored block with logs, the checks waiting for "
        "their share of the rate (one header call per block: slower); without it, the checks "
        "under --rps spend their calls on audits.",
        type=bool,
        default=False,
    ),
    Option(
        "engine",
        "What runs the fetchers and the writer: multiprocessing (this machine) or ray (a Ray "
        "cluster; install the extra: pip install -e '.[ray]').",
        default=Engine.MULTIPROCESSING.value,
        choices=tuple(Engine),
    ),
    Option(
        "ray_address",
        "With --engine ray: the cluster to join, such as HOST:6379 or auto (default: start a "
        "local Ray instance on this machine).",
        metavar="ADDRESS",
    ),
    Option(
        "config",
        "TOML file with options and per-endpoint settings ([endpoints.NAME] url, rps, "
        "concurrency, max-concurrency, max-block-range); flags given here win.",
        type=Path,
        path="file",
        parameter="config_file",
        in_file=False,
        command_only=True,
    ),
    Option(
        "quiet",
        "No progress display or per-task lines: warnings and the verdict only.",
        type=bool,
        default=False,
        short="-q",
        command_only=True,
    ),
    Option(
        "verbose",
        "Also every failed request, with its error class and what was done about it (and "
        "per-task lines on a terminal).",
        type=bool,
        default=False,
        short="-v",
        in_file=False,
        command_only=True,
    ),
    Option(
        "metrics_port",
        "Serve Prometheus metrics on this port while the run goes on.",
        type=int,
        at_least=0,
        at_most=65535,
        in_file=False,
        command_only=True,
    ),
    Option(
        "metrics_host",
        "Address the metrics server binds to.",
        default="127.0.0.1",
        in_file=False,
        command_only=True,
    ),
)

BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}
BY_DEST: dict[str, Option] = {option.dest: option for option in OPTIONS}
FILE_OPTIONS: dict[str, Option] = {option.name: option for option in OPTIONS if option.in_file}

# The keys of one [endpoints.NAME] table: its URL and its own limits.
ENDPOINT_KEYS: dict[str, tuple[type, ...]] = {
    "url": (str,),
    "rps": BY_NAME["rps"].toml_types,
    "concurrency": BY_NAME["concurrency"].toml_types,
    "max_concurrency": BY_NAME["max_concurrency"].toml_types,
    "max_block_range": (int,),
}


def grouped(values: dict[str, Any]) -> dict[str, Any]:
    """`values` (keyed by dest) with the options of a group gathered into one tuple under the
    group's name, in registry order."""
    values = dict(values)
    groups: dict[str, list[Any]] = {}
    for option in OPTIONS:
        if option.group and option.dest in values:
            groups.setdefault(option.group, []).append(values.pop(option.dest))
    return values | {name: tuple(items) for name, items in groups.items()}


def checked(values: dict[str, Any]) -> dict[str, Any]:
    """`values` (keyed by dest) with each registry option checked and converted; other keys
    are left for the caller to refuse."""
    return {
        key: BY_DEST[key].check(value) if key in BY_DEST else value for key, value in values.items()
    }
