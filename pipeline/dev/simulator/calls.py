"""Answering a request call by call: a batch is split, each call handled on its own (caps,
lagging heads, pruned history, missing or wrong block timestamps, hostile answers, lies), and the
array reassembled in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.dev.providers import (
    PRUNED,
    THROTTLES,
    CapHit,
    Hint,
    Profile,
    Refusal,
    cap_builder,
    hint_range,
)
from pipeline.dev.simulator.liars import BLOCK_METHODS, Liars
from pipeline.dev.simulator.wire import (
    HEAD_TAGS,
    Reply,
    RpcRequest,
    filter_of,
    literal_range,
    log_block,
    quantity,
    result_of,
    with_block,
)

HEAD_METHODS = frozenset({"eth_blockNumber", "eth_getBlockByNumber"})
Spoil = Callable[[dict[str, Any]], tuple[dict[str, Any], str | None]]
Rewrite = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class ProxyHooks:
    """What answering calls needs from the proxy; passed in, so this module never imports it."""

    profile: Profile
    logs_rules: bool  # eth_getLogs calls are answered here (caps, lag, pruning, hostility)
    record: Callable[[int | None, int | None, str], None]  # an eth_getLogs outcome, for stats()
    rates: Callable[[], tuple[float, float]]  # (requests in the last second, the allowed rate)
    spoil: Spoil  # a successful eth_getLogs answer -> what to send, and the mutation (or None)
    stamp: Rewrite  # a successful eth_getLogs answer -> with blockTimestamp as the profile says
    liars: Liars  # wrong answers with HTTP 200: eth_getLogs, and blocks a lagging backend lacks


@dataclass(frozen=True)
class Answer:
    """The JSON-RPC response object for one call, and its HTTP status."""

    response: Any
    status: int = 200


class UpstreamFailed(Exception):
    """Upstream's answer to one call was no JSON-RPC answer: the request gets that reply as is."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def answer_request(calls: Calls, request: RpcRequest, throttled: list[bool]) -> Reply:
    """Answer a single or batch request call by call, and reassemble the answer in order."""
    flags = iter(throttled)
    payload = orjson.loads(request.body)  # it parsed once already: there are calls in it
    answers: list[Answer] = []
    try:
        for item in payload if request.is_batch else [payload]:
            if isinstance(item, dict):
                answers.append(calls.answer(item, next(flags, False)))
            else:
                answers.append(Answer(calls.post(item)))  # upstream says what is wrong
    except UpstreamFailed as failed:
        return failed.reply
    if not request.is_batch:
        return Reply(answers[0].status, orjson.dumps(answers[0].response), "application/json")
    # A batch keeps a per-call status (QuickNode's 413) only when every call shares it.
    statuses = {a.status for a in answers}
    status = statuses.pop() if len(statuses) == 1 else 200
    body = orjson.dumps([a.response for a in answers])
    return Reply(status, body, "application/json")


class Calls:
    """Answers the calls of one request one at a time, asking upstream as needed (the upstream
    head at most once per request)."""

    def __init__(
        self, hooks: ProxyHooks, forward: Callable[[bytes], Reply], in_batch: bool = False
    ) -> None:
        self.hooks = hooks
        self.profile = hooks.profile
        self.in_batch = in_batch  # the calls came in a JSON-RPC batch
        self.posted = 0
        self._forward = forward
        self._upstream_head: int | None = None

    def answer(self, call: dict[str, Any], throttled: bool) -> Answer:
        """This provider's answer to one call."""
        p, method = self.profile, call.get("method")
        if throttled:
            refusal = THROTTLES[p.throttle](*self.hooks.rates())
            return self._refuse(call, "throttled", refusal, *literal_range(call))
        if method == "eth_getLogs" and self.hooks.logs_rules:
            return self._get_logs(call)
        if method in BLOCK_METHODS and self.hooks.liars.behind and self._lacks(call):
            return Answer(result_of(call, None))  # the lagging backend has not seen that block
        if p.lag_blocks and method == "eth_blockNumber":
            return Answer(result_of(call, hex(self.head())))
        if p.lag_blocks and method == "eth_getBlockByNumber":
            return self._block(call)
        if method == "eth_getLogs":
            self.hooks.record(*literal_range(call), "ok")
        return Answer(self.post(call))

    def post(self, call: Any) -> dict[str, Any]:
        """Send one call upstream and return its JSON-RPC response object."""
        reply = self._forward(orjson.dumps(call))
        self.posted += 1
        try:
            response = orjson.loads(reply.body) if reply.status == 200 else None
        except orjson.JSONDecodeError:
            response = None
        if not isinstance(response, dict):
            raise UpstreamFailed(reply)
        return response

    def _lacks(self, call: dict[str, Any]) -> bool:
        # A block past the true head is null from any backend: that is no lie.
        params = call.get("params")
        number = quantity(params[0]) if isinstance(params, list) and params else None
        if number is None or number > self.head():
            return False
        return self.hooks.liars.lacks(call, self.head(), self.in_batch)

    def head(self) -> int:
        """This node's head: upstream's, lag_blocks behind."""
        if self._upstream_head is None:
            response = self.post({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"})
            head = quantity(response.get("result"))
            if head is None:
                raise UpstreamFailed(Reply(502, b"upstream did not report its head"))
            self._upstream_head = head
        return max(0, self._upstream_head - self.profile.lag_blocks)

    def _refuse(
        self, call: dict[str, Any], outcome: str, refusal: Refusal, start: Any, end: Any
    ) -> Answer:
        if call.get("method") == "eth_getLogs":
            self.hooks.record(start, end, outcome)
        response = {"jsonrpc": "2.0", "id": call.get("id"), "error": refusal.error}
        return Answer(response, refusal.status)

    def _cap(self, kind: str, cap: int, hint: Hint | None) -> Refusal:
        p = self.profile
        builder = cap_builder(p, kind)
        if builder is None:  # check_profile refuses such a profile up front
            raise ValueError(f"dialect {p.dialect!r} has no {kind}-cap error")
        return builder(CapHit(cap, hint, p.range_cap, p.result_cap))

    def _resolve(self, value: Any) -> int | None:
        if value == "earliest":
            return 0
        # A tag means *this* node's head; "safe"/"finalized" are taken as the head too.
        return self.head() if value in HEAD_TAGS else quantity(value)

    def _get_logs(self, call: dict[str, Any]) -> Answer:
        p = self.profile
        query = filter_of(call)
        start = end = None
        if query is not None and "blockHash" not in query:
            start = self._resolve(query.get("fromBlock", "latest"))
            end = self._resolve(query.get("toBlock", "latest"))
        if p.pruned_below is not None and start is not None and start < p.pruned_below:
            return self._refuse(call, "pruned", PRUNED, start, end)
        span = end - start + 1 if start is not None and end is not None else 0
        if p.range_cap is not None and start is not None and end is not None and span > p.range_cap:
            hint = hint_range(p.hint, start, end, start + p.range_cap - 1)
            refusal = self._cap("range", p.range_cap, hint)
            return self._refuse(call, "range_cap", refusal, start, end)
        sent = call
        liars = self.hooks.liars
        resolved = p.lag_blocks or liars.behind
        if resolved and query is not None and start is not None and end is not None:
            # Upstream would read a tag as its own head: send the numbers this node resolved.
            bounds = {"fromBlock": hex(start), "toBlock": hex(end)}
            sent = {**call, "params": [{**query, **bounds}, *call["params"][1:]]}
        try:
            response = self.post(sent)
        except UpstreamFailed:
            self.hooks.record(start, end, "ok")
            raise
        logs = response.get("result")
        if not isinstance(logs, list):  # upstream's own error passes through
            self.hooks.record(start, end, "ok")
            return Answer(response)
        kept = self._lagged(logs, end) if p.lag_blocks else logs
        outcome = "lagged" if len(kept) != len(logs) else "ok"
        if liars.behind:
            honest, kept = kept, liars.behind_logs(kept, end, self.head())
            outcome = "lied" if len(kept) != len(honest) else outcome
        if p.result_cap is not None and len(kept) > p.result_cap:
            refusal = self._result_refusal(kept, p.result_cap, start, end)
            return self._refuse(call, "result_cap", refusal, start, end)
        lie = liars.lie(kept, self.post)
        if lie is not None:
            kept, outcome = lie, "lied"
        answer = response if kept is logs else {**response, "result": kept}
        answer, spoiled = self.hooks.spoil(self.hooks.stamp(answer))
        self.hooks.record(start, end, "hostile" if spoiled else outcome)
        return Answer(answer)

    def _lagged(self, logs: list[Any], end: int | None) -> list[Any]:
        # No error, no hint: a lagging node simply has not seen those blocks yet.
        head = self.head()
        if self.profile.lag_mode == "empty" and end is not None:
            return [] if end > head else logs
        return [log for log in logs if log_block(log) <= head]

    def _result_refusal(
        self, logs: list[Any], cap: int, start: int | None, end: int | None
    ) -> Refusal:
        blocks = sorted(log_block(log) for log in logs)
        first = blocks[0] if start is None else start  # a blockHash query: its block from the logs
        last = blocks[-1] if end is None else end
        # The largest prefix that fits ends just before the block of the first log that does not;
        # a first block that alone holds too many logs still gets [first, first].
        # No clamp to range_cap: a range over it was refused before upstream was asked.
        fit = max(first, blocks[cap] - 1)
        return self._cap("result", cap, hint_range(self.profile.hint, first, last, fit))

    def _block(self, call: dict[str, Any]) -> Answer:
        params = call.get("params")
        if not isinstance(params, list) or not params:
            return Answer(self.post(call))
        tag, head = params[0], self.head()
        if tag in ("latest", "pending"):
            return Answer(self.post(with_block(call, head)))
        if tag in ("safe", "finalized"):
            response = self.post(call)
            block = response.get("result")
            number = quantity(block.get("number")) if isinstance(block, dict) else None
            if number is not None and number > head:
                response = self.post(with_block(call, head))
            return Answer(response)
        number = quantity(tag)
        if number is not None and number > head:
            return Answer(result_of(call, None))  # what any node says of a block it has not seen
        return Answer(self.post(call))
