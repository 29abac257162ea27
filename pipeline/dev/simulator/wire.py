"""What goes over the wire: a parsed request, the reply to send, the outcomes that are no reply,
and small readers of JSON-RPC calls."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.dev.providers import Refusal

HEAD_TAGS = frozenset({"latest", "pending", "safe", "finalized"})


@dataclass(frozen=True)
class RpcRequest:
    """One HTTP request body and the JSON-RPC calls in it (empty if the body did not parse)."""

    body: bytes
    calls: tuple[dict[str, Any], ...] = ()
    is_batch: bool = False

    @property
    def methods(self) -> list[str]:
        """Method name of every call that has a string method."""
        return [c["method"] for c in self.calls if isinstance(c.get("method"), str)]


@dataclass(frozen=True)
class Reply:
    """A complete HTTP response to send back."""

    status: int
    body: bytes
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    trickle: bool = False  # send the body a byte every TRICKLE_INTERVAL_S


DROP = "drop"  # close the connection without any response
HOLD = "hold"  # send nothing until the proxy dies, then close
TRUNCATE = "truncate"  # forward, then send only the first half of the upstream body
TRICKLE = "trickle"  # forward, then send the body a byte at a time: every read is quick, the
# whole never ends (a per-read timeout alone never fires)
TRICKLE_INTERVAL_S = 0.5
Outcome = Reply | str


def parse_request(body: bytes) -> RpcRequest:
    """Parse just enough of a single or batch JSON-RPC body to see its calls."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return RpcRequest(body)
    items = payload if isinstance(payload, list) else [payload]
    calls = tuple(c for c in items if isinstance(c, dict))
    return RpcRequest(body, calls, isinstance(payload, list))


def as_reply(refusal: Refusal, request: RpcRequest) -> Reply:
    """The HTTP reply for a refusal of a whole request: its raw body, or its JSON-RPC error for
    every call (an array for a batch)."""
    headers = dict(refusal.headers)
    if refusal.error is None:
        return Reply(refusal.status, refusal.body, refusal.content_type, headers)
    ids = [c.get("id") for c in request.calls] or [None]
    items = [{"jsonrpc": "2.0", "id": i, "error": refusal.error} for i in ids]
    body = orjson.dumps(items if request.is_batch else items[0])
    return Reply(refusal.status, body, "application/json", headers)


def quantity(value: Any) -> int | None:
    """A 0x hex quantity's value; None for anything else."""
    if isinstance(value, str) and value[:2] in ("0x", "0X"):
        with contextlib.suppress(ValueError):
            return int(value, 16)
    return None


def filter_of(call: dict[str, Any]) -> dict[str, Any] | None:
    """The filter object of an eth_getLogs call, if it has one."""
    params = call.get("params")
    if isinstance(params, list) and params and isinstance(params[0], dict):
        return params[0]
    return None


def literal_range(call: dict[str, Any]) -> tuple[int | None, int | None]:
    """eth_getLogs bounds as written (None for tags): for calls the proxy never resolved."""
    query = filter_of(call) or {}
    return quantity(query.get("fromBlock")), quantity(query.get("toBlock"))


def log_block(log: Any) -> int:
    """The block number of a log; -1 for a pending log (before any head)."""
    number = quantity(log.get("blockNumber")) if isinstance(log, dict) else None
    return -1 if number is None else number


def with_block(call: dict[str, Any], number: int) -> dict[str, Any]:
    """The call with its block parameter replaced by `number`."""
    return {**call, "params": [hex(number), *call["params"][1:]]}


def result_of(call: dict[str, Any], result: Any) -> dict[str, Any]:
    """A successful JSON-RPC response to `call`."""
    return {"jsonrpc": "2.0", "id": call.get("id"), "result": result}
