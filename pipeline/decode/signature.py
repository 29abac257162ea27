"""Event specs from a signature string (`--event`) or a contract ABI JSON file (`--abi`).

    Transfer(address indexed from, address indexed to, uint256 value)
    event Swap(address indexed sender, int256 amount0, (uint256,address)[] legs) anonymous;

Parameters without a name are called arg0, arg1 ... by position (tuple components too). Anything
malformed raises ConfigError with one line that says what to fix.

Anonymous events (Solidity `anonymous`: no topic0) are kept, with anonymous=True: they cannot be
matched by selector, so the decoder matches them by topic count alone, which only makes sense for
logs already restricted to the contracts that emit them. require_address_for_anonymous() is the
check for the command line: refuse them unless an address filter is given.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pipeline.decode.abitypes import (
    AbiType,
    AbiTypeError,
    elementary,
    tuple_of,
    with_suffix,
)
from pipeline.errors import ConfigError
from pipeline.hashing import keccak256

_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_TYPE_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_ABI_TYPE = re.compile(r"([A-Za-z][A-Za-z0-9]*)((?:\[\d*\])*)")
MAX_INDEXED = 3  # topics after topic0; an anonymous event has one more


@dataclass(frozen=True)
class Param:
    """One event parameter, or one component of a tuple type (then indexed is False).

    abi_type is canonical ("uint256", "(uint256,address)[]"); components describe the tuple at
    the base of the type, if any."""

    name: str
    abi_type: str
    indexed: bool = False
    components: tuple[Param, ...] = ()

    @cached_property
    def type(self) -> AbiType:
        """The parsed type tree (tuple fields named after the components)."""
        if self.abi_type.startswith("("):
            close = _matching_paren(self.abi_type)
            fields = [(c.name, c.type) for c in self.components]
            return with_suffix(tuple_of(fields), self.abi_type[close + 1 :])
        match = _ABI_TYPE.fullmatch(self.abi_type)
        if match is None:
            raise AbiTypeError(f'unknown type "{self.abi_type}"')
        return with_suffix(elementary(match.group(1)), match.group(2))


@dataclass(frozen=True)
class EventSpec:
    """One event to decode. topic0 is the 0x keccak of the canonical signature (an anonymous
    event's logs do not carry it)."""

    name: str
    signature: str
    topic0: str
    params: tuple[Param, ...]
    anonymous: bool = False

    @property
    def indexed_params(self) -> tuple[Param, ...]:
        """The parameters in topics, in order."""
        return tuple(p for p in self.params if p.indexed)

    @property
    def data_params(self) -> tuple[Param, ...]:
        """The parameters ABI-encoded together in the log's data, in order."""
        return tuple(p for p in self.params if not p.indexed)

    @property
    def topic_count(self) -> int:
        """How many topics this event's logs have."""
        return len(self.indexed_params) + (0 if self.anonymous else 1)

    @property
    def layout(self) -> str:
        """The full declaration: names, indexed and anonymous included."""
        params = ",".join(
            f"{p.abi_type}{' indexed' if p.indexed else ''} {p.name}" for p in self.params
        )
        return f"{self.name}({params}){' anonymous' if self.anonymous else ''}"


def parse_signature(text: str) -> EventSpec:
    """An EventSpec from a signature such as `Transfer(address indexed from, uint256 value)`."""
    where = f'--event "{_one_line(text)}"'
    try:
        return _SignatureReader(text).event()
    except AbiTypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_abi(path: str | Path) -> list[EventSpec]:
    """Every event of a contract ABI JSON file (a list of entries, or an artifact with "abi")."""
    where = f"--abi {path}"
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: not valid JSON ({_one_line(str(exc))})") from None
    return parse_abi_entries(entries, where)


def parse_abi_entries(entries: object, where: str = "--abi") -> list[EventSpec]:
    """Every "type": "event" entry of a decoded ABI, identical ones once; `where` starts errors."""
    if isinstance(entries, dict) and isinstance(entries.get("abi"), list):
        entries = entries["abi"]  # a Hardhat/Foundry artifact
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where}: not a JSON list of ABI entries")
    specs = [_abi_event(e, where) for e in entries if e.get("type") == "event"]
    if not specs:
        raise ConfigError(f"{where} has no events")
    return list(dict.fromkeys(specs))


def require_address_for_anonymous(specs: list[EventSpec], address_given: bool) -> None:
    """Refuse anonymous events unless the logs are restricted to some contract addresses: with
    no topic0 they are matched by topic count alone, which fits logs of any contract."""
    anonymous = [s.name for s in specs if s.anonymous]
    if anonymous and not address_given:
        raise ConfigError(
            f'event "{anonymous[0]}" is anonymous (its logs carry no topic0): decode it only '
            "together with --address for the contract that emits it"
        )


def make_spec(name: str, params: list[Param], anonymous: bool) -> EventSpec:
    """Check the event as a whole and compute its canonical signature and topic0."""
    if not _IDENTIFIER.fullmatch(name):
        raise AbiTypeError(f'bad event name "{name}": use letters, digits, _ or $')
    names = [p.name for p in params]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AbiTypeError(f'duplicate parameter name "{duplicates[0]}"')
    indexed = sum(p.indexed for p in params)
    limit = MAX_INDEXED + anonymous
    if indexed > limit:
        kind = "an anonymous event" if anonymous else "an event"
        raise AbiTypeError(f"{indexed} indexed parameters: {kind} has at most {limit}")
    signature = f"{name}({','.join(p.abi_type for p in params)})"
    topic0 = "0x" + keccak256(signature.encode()).hex()
    return EventSpec(name, signature, topic0, tuple(params), anonymous)


def param_from_type(name: str, kind: AbiType, indexed: bool) -> Param:
    """A Param (components included) for a parsed type."""
    base = kind
    while base.kind == "array":
        base = base.item
    components = tuple(param_from_type(n, t, False) for n, t in base.fields)
    return Param(name, kind.canonical, indexed, components)


# --- signature strings -------------------------------------------------------------------------


class _SignatureReader:
    """A recursive-descent reader of one human-readable event signature."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def event(self) -> EventSpec:
        name = self._word(_IDENTIFIER)
        if name == "event" and self._peek() not in ("(", ""):
            name = self._word(_IDENTIFIER)
        if not name:
            raise AbiTypeError(
                'expected an event name, as in "Transfer(address indexed from, ...)"'
            )
        if not self._take("("):
            raise AbiTypeError(f'missing "(" after "{name}"')
        fields = self._fields(top=True)
        anonymous = self._keyword("anonymous")
        self._take(";")
        if self._peek():
            raise AbiTypeError(f'unexpected "{_one_line(self.text[self.pos :])}" after ")"')
        params = [param_from_type(n, t, indexed) for n, t, indexed in fields]
        return make_spec(name, params, anonymous)

    def _fields(self, top: bool) -> list[tuple[str, AbiType, bool]]:
        """`type [indexed] [name]` separated by commas, up to and including the ')'."""
        fields: list[tuple[str, AbiType, bool]] = []
        if self._take(")"):
            return fields
        while True:
            kind = self._type()
            if kind.canonical == "address":
                self._keyword("payable")
            indexed = top and self._keyword("indexed")
            name = self._word(_IDENTIFIER) or f"arg{len(fields)}"
            fields.append((name, kind, indexed))
            if self._take(")"):
                return fields
            if not self._take(","):
                found = self._peek()
                if not found:
                    raise AbiTypeError('missing ")"')
                raise AbiTypeError(f'unexpected "{found}" after parameter "{name}"')

    def _type(self) -> AbiType:
        if self._take("(") or (self._keyword("tuple") and self._take("(")):
            fields = self._fields(top=False)
            kind = tuple_of([(name, t) for name, t, _ in fields])
        else:
            word = self._word(_TYPE_WORD)
            if not word:
                found = self._peek()
                raise AbiTypeError(f'expected a type, found "{found}"' if found else 'missing ")"')
            kind = elementary(word)
        while self._take("["):
            digits = self._word(re.compile(r"\d*"))
            if not self._take("]"):
                raise AbiTypeError(f'missing "]" in the type "{kind.canonical}[{digits}"')
            kind = with_suffix(kind, f"[{digits}]")
        return kind

    def _peek(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1
        return self.text[self.pos : self.pos + 1]

    def _take(self, char: str) -> bool:
        if self._peek() == char:
            self.pos += 1
            return True
        return False

    def _word(self, pattern: re.Pattern) -> str:
        self._peek()
        match = pattern.match(self.text, self.pos)
        if match is None:
            return ""
        self.pos = match.end()
        return match.group()

    def _keyword(self, word: str) -> bool:
        start = self.pos
        if self._word(_IDENTIFIER) == word:
            return True
        self.pos = start
        return False


# --- ABI JSON ----------------------------------------------------------------------------------


def _abi_event(entry: dict, where: str) -> EventSpec:
    name = entry.get("name")
    if not isinstance(name, str):
        raise ConfigError(f'{where}: an event entry has no "name"')
    try:
        inputs = entry.get("inputs", [])
        if not isinstance(inputs, list):
            raise AbiTypeError('"inputs" is not a list')
        params = [
            param_from_type(_abi_name(item, i), _abi_type(item), item.get("indexed") is True)
            for i, item in enumerate(_entries(inputs, "inputs"))
        ]
        return make_spec(name, params, entry.get("anonymous") is True)
    except AbiTypeError as exc:
        raise ConfigError(f'{where}: event "{_one_line(name)}": {exc}') from None


def _abi_type(item: dict) -> AbiType:
    text = item.get("type")
    match = _ABI_TYPE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise AbiTypeError(f"bad type {json.dumps(text)}")
    if match.group(1) != "tuple":
        return with_suffix(elementary(match.group(1)), match.group(2))
    components = _entries(item.get("components"), "components of a tuple")
    fields = [(_abi_name(c, i), _abi_type(c)) for i, c in enumerate(components)]
    return with_suffix(tuple_of(fields), match.group(2))


def _abi_name(item: dict, position: int) -> str:
    name = item.get("name") or f"arg{position}"
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise AbiTypeError(f"bad parameter name {json.dumps(name)}: use letters, digits, _ or $")
    return name


def _entries(value: object, what: str) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise AbiTypeError(f"{what} is not a list of objects")
    return value


# --- helpers -----------------------------------------------------------------------------------


def _matching_paren(text: str) -> int:
    depth = 0
    for position, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return position
    raise AbiTypeError(f'unbalanced parentheses in type "{text}"')


def _one_line(text: str, limit: int = 120) -> str:
    """Whitespace runs as one space, cut to `limit` characters: error messages are one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
