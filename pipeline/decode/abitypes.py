"""ABI types as a small tree: validated, canonical, and what the decoder needs to know of each.

Supported: uintN/intN (N a multiple of 8 from 8 to 256), address, bool, bytesN (1..32), bytes,
string, fixed-size and dynamic arrays, tuples. fixed/ufixed and function are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

WORD = 32  # bytes in one ABI word
KINDS = ("uint", "int", "address", "bool", "fixed_bytes", "bytes", "string", "array", "tuple")
_ELEMENTARY = re.compile(r"(uint|int|bytes)(\d*)|address|bool|string")
_SUFFIX = re.compile(r"\[(\d*)\]")
WIDE_BITS = 64  # integers wider than this are decimal strings (+ a float64 companion)


class AbiTypeError(ValueError):
    """A type string that is not a supported ABI type; the message says why, in one line."""


@dataclass(frozen=True)
class AbiType:
    """One ABI type. size: bits (uint/int), bytes (fixed_bytes), length (array; 0 = dynamic)."""

    kind: str
    size: int = 0
    item: AbiType | None = None
    fields: tuple[tuple[str, AbiType], ...] = ()

    @cached_property
    def canonical(self) -> str:
        """The type as it is spelled in a canonical event signature."""
        if self.kind in ("uint", "int"):
            return f"{self.kind}{self.size}"
        if self.kind == "fixed_bytes":
            return f"bytes{self.size}"
        if self.kind == "array":
            return f"{self.item.canonical}[{self.size or ''}]"
        if self.kind == "tuple":
            return "(" + ",".join(t.canonical for _, t in self.fields) + ")"
        return self.kind

    @cached_property
    def dynamic(self) -> bool:
        """Whether the value lives in the tail of its container (ABI 'dynamic')."""
        if self.kind in ("bytes", "string"):
            return True
        if self.kind == "array":
            return self.size == 0 or self.item.dynamic
        if self.kind == "tuple":
            return any(t.dynamic for _, t in self.fields)
        return False

    @cached_property
    def head_words(self) -> int:
        """Words the type takes in its container's head (1 for any dynamic type: its offset)."""
        if self.dynamic:
            return 1
        if self.kind == "array":
            return self.size * self.item.head_words
        if self.kind == "tuple":
            return sum(t.head_words for _, t in self.fields)
        return 1

    @cached_property
    def wide(self) -> bool:
        """Whether the type holds an integer too wide for int64/uint64 (decimal strings)."""
        if self.kind in ("uint", "int"):
            return self.size > WIDE_BITS
        if self.kind == "array":
            return self.item.wide
        return any(t.wide for _, t in self.fields)

    @cached_property
    def has_string(self) -> bool:
        """Whether the type holds a string anywhere (decoded with replacement, counted)."""
        if self.kind == "string":
            return True
        if self.kind == "array":
            return self.item.has_string
        return any(t.has_string for _, t in self.fields)

    def eth_abi_type(self) -> str:
        """The canonical spelling with string read as bytes: UTF-8 is decoded by the caller,
        so invalid text is replaced and counted instead of failing the log."""
        if self.kind == "string":
            return "bytes"
        if self.kind == "array":
            return f"{self.item.eth_abi_type()}[{self.size or ''}]"
        if self.kind == "tuple":
            return "(" + ",".join(t.eth_abi_type() for _, t in self.fields) + ")"
        return self.canonical


def elementary(word: str) -> AbiType:
    """An elementary type from its name; `uint`/`int` are uint256/int256 as in Solidity."""
    if word.startswith(("fixed", "ufixed")):
        raise AbiTypeError(f'unsupported type "{word}": fixed-point types cannot be decoded')
    if word == "function":
        raise AbiTypeError('unsupported type "function"')
    match = _ELEMENTARY.fullmatch(word)
    if match is None:
        raise AbiTypeError(f'unknown type "{word}"')
    base, digits = match.group(1), match.group(2)
    if base is None:
        return AbiType(word)
    if base == "bytes":
        if not digits:
            return AbiType("bytes")
        if digits[0] != "0" and 1 <= int(digits) <= WORD:
            return AbiType("fixed_bytes", int(digits))
        raise AbiTypeError(f'unknown type "{word}" (bytesN needs N from 1 to 32)')
    if not digits:
        return AbiType(base, 256)
    bits = int(digits)
    if digits[0] == "0" or bits % 8 or not 8 <= bits <= 256:
        raise AbiTypeError(f'unknown type "{word}" ({base}N needs N a multiple of 8 from 8 to 256)')
    return AbiType(base, bits)


def with_suffix(base: AbiType, suffix: str) -> AbiType:
    """`base` with array dimensions such as "[2][]" applied left to right."""
    position = 0
    kind = base
    while position < len(suffix):
        match = _SUFFIX.match(suffix, position)
        if match is None:
            raise AbiTypeError(f'bad array suffix "{suffix}" of type "{base.canonical}"')
        digits = match.group(1)
        if digits and (digits[0] == "0" or int(digits) > 2**20):
            raise AbiTypeError(f'bad array size "[{digits}]": it must be 1 to {2**20}')
        kind = AbiType("array", int(digits or 0), kind)
        position = match.end()
    return kind


def tuple_of(fields: list[tuple[str, AbiType]]) -> AbiType:
    """A tuple type; it needs at least one component, with distinct names."""
    if not fields:
        raise AbiTypeError("empty tuple: a tuple needs at least one component")
    names = [name for name, _ in fields]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AbiTypeError(f'duplicate tuple component name "{duplicates[0]}"')
    return AbiType("tuple", fields=tuple(fields))
