"""JSON-RPC transport for one endpoint: a requests session, orjson for the bodies.

This once went through web3's HTTPProvider, but all it still gave was two request headers:
web3's result formatting (checksummed addresses, HexBytes, AttributeDict) costs ~10x the fetch
itself, its retry layer ignores Retry-After and hides timeouts (the worker owns retries), and
importing web3 (eth_account, py_ecc) takes 0.55 s in every process, more than the whole
start-up budget of a run.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
import requests
import urllib3
from requests.adapters import HTTPAdapter

from pipeline.config.endpoints import Endpoint, scrub
from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.classify import (
    MOVED_STATUSES,
    classify_exception,
    classify_rpc_error,
    decode_response,
    reading_answer,
)
from pipeline.fetch.inbox import Inbox

# Under glibc's mmap threshold (run/lifecycle.py): a chunk's memory is reused, not mapped anew.
READ_CHUNK_BYTES = 256 << 10
MAX_RESPONSE_BYTES = 512 << 20  # larger answers are split like any "response too big" error
REQUEST_HEADERS = {"Content-Type": "application/json", "User-Agent": "pipeline-log-backfill"}
MAX_QUANTITY = 2**64 - 1  # block numbers, chain ids: what the output's uint64 columns hold
MAX_TIMESTAMP = 2**63 - 1  # what the output's block_timestamp (int64 seconds) holds
_QUANTITY = re.compile(r"0x[0-9a-fA-F]+")
_HASH = re.compile(r"0x[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class BlockHeader:
    """What the tool keeps of a block header: its hash (0x, lowercase), timestamp (seconds) and
    logs bloom (256 bytes; empty when the header had none readable)."""

    hash: str
    timestamp: int
    bloom: bytes = b""


@dataclass(frozen=True)
class RawResponse:
    """An HTTP answer as received: status, headers and the whole body (a view of the client's
    reused buffer when posted `into` one)."""

    status: int
    headers: Mapping[str, str]
    body: bytes | memoryview

    def owned(self) -> RawResponse:
        """This answer with a body of its own (bytes), valid after the client's next request."""
        if isinstance(self.body, bytes):
            return self
        return RawResponse(self.status, self.headers, bytes(self.body))


class RpcClient:
    """Posts JSON-RPC requests to one endpoint and returns decoded results or raises RpcError."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.session = _session(endpoint.url)
        # urllib3 must not retry behind our back either: every attempt is counted and paced.
        self.session.mount("http://", HTTPAdapter(max_retries=0))
        self.session.mount("https://", HTTPAdapter(max_retries=0))
        self._headers = REQUEST_HEADERS
        self._ids = itertools.count(1)
        self.last_latency_ms = 0.0
        self.inbox = Inbox()  # a reused receive buffer for eth_getLogs answers (see post)

    def call(self, method: str, params: list) -> Any:
        """One request's decoded result; the latency of the latest call is in `last_latency_ms`."""
        return self.decode(self.post(method, params))

    def post(self, method: str, params: list, *, into: Inbox | None = None) -> RawResponse:
        """One request's raw answer, for callers that parse the body themselves. `into`: the
        body is read into that reused buffer (fetch.inbox, such as the client's `inbox`), as a
        read-only memoryview valid until it is read into again."""
        call = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        body = orjson.dumps(call)
        with self.reading(f"the answer to {method}"):
            return self._post(body, into)

    def block_hashes(self, blocks: list[int]) -> dict[int, str]:
        """The hashes of `blocks` from one JSON-RPC batch request; RpcError unless the endpoint
        answers every call of the batch (not every provider takes batches)."""
        found, _ = self.block_headers(blocks)
        if len(found) != len(blocks):
            raise RpcError(ErrorKind.MALFORMED, "the batch of block hashes was not answered")
        return {block: found[block].hash for block in blocks}

    def block_headers(self, blocks: list[int]) -> tuple[dict[int, BlockHeader], RpcError | None]:
        """The headers of `blocks` that one request brings: a JSON-RPC batch, or a plain call
        for a single block. A request refused as a whole (an error status or error object, no
        answer) raises its RpcError; otherwise the headers answered come back with, when some
        calls were not answered, the error of one of those (throttles and quotas first)."""
        if len(blocks) == 1:
            (block,) = blocks
            result = self.call("eth_getBlockByNumber", [hex(block), False])
            with self.reading(f"the header of block {block}"):
                header, error = _header(result, block)
            if error is not None:
                raise error
            return {block: header}, None
        calls = [
            {"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber", "params": [hex(b), False]}
            for i, b in enumerate(blocks)
        ]
        with self.reading("the block headers"):
            return _batch_headers(self.post_batch(calls), blocks)

    def post_batch(self, calls: list[dict]) -> RawResponse:
        """One JSON-RPC batch request's raw answer (callers read the array themselves)."""
        with self.reading("the answer to several calls"):
            return self._post(orjson.dumps(calls))

    def decode(self, response: RawResponse) -> Any:
        """The result of a raw answer, or the RpcError it amounts to."""
        with self.reading("the JSON-RPC answer"):
            return decode_response(response.status, response.headers, response.body)

    @contextlib.contextmanager
    def reading(self, what: str) -> Iterator[None]:
        """Around code that reads this endpoint's answer to a request: any failure in it leaves
        as an RpcError (classify.reading_answer: anything unexpected is a malformed response),
        scrubbed of the URL and its key."""
        try:
            with reading_answer(what):
                yield
        except RpcError as err:
            raise self._scrubbed(err) from None

    def _scrubbed(self, err: RpcError) -> RpcError:
        # Error bodies and transport errors may quote the URL, and with it an API key.
        err.message = scrub(err.message, self.endpoint.url)
        return err

    def _post(self, body: bytes, inbox: Inbox | None = None) -> RawResponse:
        started = time.perf_counter()
        try:
            response = self.session.post(
                self.endpoint.url,
                data=body,
                headers=self._headers,
                timeout=self.timeout,
                stream=True,
            )
            with response:
                chunks = self._read_body(response, started + self.timeout)
                if inbox is None:
                    content: bytes | memoryview = b"".join(chunks)
                else:
                    content = inbox.fill(chunks, _length(response))
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise classify_exception(exc) from None
        finally:
            self.last_latency_ms = (time.perf_counter() - started) * 1000
        return RawResponse(response.status_code, response.headers, content)

    def _read_body(self, response: requests.Response, deadline: float) -> Iterator[bytes]:
        # requests' timeout bounds each read, not the whole body: an endpoint that trickles a
        # byte now and then would hold us forever. Reading may still fail (truncated, reset).
        size = 0
        # read1 returns what one socket read brings; iter_content would wait for a full chunk.
        while chunk := response.raw.read1(READ_CHUNK_BYTES, decode_content=True):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise RpcError(
                    ErrorKind.RESPONSE_TOO_BIG, f"response over {MAX_RESPONSE_BYTES >> 20} MiB"
                )
            if time.perf_counter() > deadline:
                raise RpcError(ErrorKind.TIMEOUT, f"response took over {self.timeout:g}s")
            yield chunk

    def logs_result(self, response: RawResponse) -> list[dict]:
        """The logs in a raw eth_getLogs answer, or the RpcError it amounts to."""
        logs = self.decode(response)
        if not isinstance(logs, list):
            raise RpcError(
                ErrorKind.MALFORMED, f"eth_getLogs returned {type(logs).__name__}, not a list"
            )
        return logs

    def block_logs(self, block: int) -> list[dict]:
        """Every log of one block, from eth_getBlockReceipts: the way to read a block whose logs
        exceed an endpoint's eth_getLogs caps."""
        receipts = self.call("eth_getBlockReceipts", [hex(block)])
        if receipts is None:  # what a node says of a block it has not seen
            raise RpcError(ErrorKind.BEYOND_HEAD, f"the endpoint has no receipts of block {block}")
        with self.reading("eth_getBlockReceipts"):
            if not isinstance(receipts, list) or not all(isinstance(r, dict) for r in receipts):
                raise RpcError(ErrorKind.MALFORMED, "eth_getBlockReceipts did not return receipts")
            if not all(isinstance(r.get("logs"), list | None) for r in receipts):
                raise RpcError(ErrorKind.MALFORMED, "eth_getBlockReceipts returned malformed logs")
            logs = [log for receipt in receipts for log in receipt.get("logs") or ()]
            if not all(isinstance(log, dict) for log in logs):
                raise RpcError(ErrorKind.MALFORMED, "eth_getBlockReceipts returned malformed logs")
            return logs

    def chain_id(self) -> int:
        """The chain id the endpoint serves."""
        with self.reading("eth_chainId"):
            return _quantity(self.call("eth_chainId", []), "eth_chainId")

    def block_number(self, tag: str = "latest") -> int:
        """The number of the endpoint's `latest`, `safe` or `finalized` block."""
        with self.reading(f"the {tag} block number"):
            if tag == "latest":
                return _quantity(self.call("eth_blockNumber", []), "eth_blockNumber")
            block = self.call("eth_getBlockByNumber", [tag, False])
            if not isinstance(block, dict):
                raise RpcError(ErrorKind.PERMANENT, f"the endpoint has no {tag!r} block")
            return _quantity(block.get("number"), f"eth_getBlockByNumber({tag})")

    def block_hash(self, block: int) -> str:
        """The hash of block number `block` on the endpoint's chain."""
        with self.reading(f"the hash of block {block}"):
            header = self.call("eth_getBlockByNumber", [hex(block), False])
            if not isinstance(header, dict) or not isinstance(header.get("hash"), str):
                raise RpcError(ErrorKind.BEYOND_HEAD, f"the endpoint has no block {block}")
            if not _HASH.fullmatch(header["hash"]):
                raise RpcError(
                    ErrorKind.MALFORMED, f"block {block} has hash {header['hash'][:80]!r}"
                )
            return header["hash"]

    def close(self) -> None:
        """Release pooled connections."""
        self.session.close()


def _batch_headers(
    response: RawResponse, blocks: list[int]
) -> tuple[dict[int, BlockHeader], RpcError | None]:
    """Read the answer to a batch of eth_getBlockByNumber calls (see RpcClient.block_headers)."""
    try:
        answers = orjson.loads(response.body) if response.status == HTTPStatus.OK else None
    except orjson.JSONDecodeError:
        answers = None
    if not isinstance(answers, list) or not answers:
        decode_response(response.status, response.headers, response.body)  # raises what it is
        raise RpcError(ErrorKind.MALFORMED, "a batch was answered with a single result")
    found: dict[int, BlockHeader] = {}
    errors = []
    for answer in answers:
        at = batch_index(answer, len(blocks))
        if at is None or blocks[at] in found:
            continue
        if answer.get("error") is not None:
            errors.append(classify_rpc_error(answer["error"], response.status, response.headers))
            continue
        header, error = _header(answer.get("result"), blocks[at])
        if error is None:
            found[blocks[at]] = header
        else:
            errors.append(error)
    if len(found) == len(blocks):
        return found, None
    missing = len(blocks) - len(found)
    unanswered = RpcError(ErrorKind.MALFORMED, f"{missing} of {len(blocks)} calls not answered")
    return found, min(errors, key=_urgency, default=unanswered)


class _PostSession(requests.Session):
    """Follows only the redirects that keep a POST a POST (307, 308). After a 301, 302 or 303
    requests would send a GET without the body, which no JSON-RPC endpoint answers (anvil took
    it for a WebSocket): the redirect itself comes back, and classify says where it points."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        if resp.status_code in MOVED_STATUSES:
            return None
        return super().get_redirect_target(resp)


def batch_index(answer: Any, calls: int) -> int | None:
    """Which of a batch's `calls` (ids 0..calls-1) an answer is for; None if it names none.
    Some gateways echo an id as a string ("7" for 7): the call is still plain."""
    at = answer.get("id") if isinstance(answer, dict) else None
    if isinstance(at, str) and at.isdecimal() and len(at) < 10:
        at = int(at)
    return at if type(at) is int and 0 <= at < calls else None


def _session(url: str) -> requests.Session:
    """A session for the endpoint at `url` that takes from the environment what requests would
    (proxy variables and NO_PROXY, CA bundle variables, ~/.netrc), read once here: requests reads
    them again at every request, ~0.35 ms of CPU each (measured)."""
    session = _PostSession()
    settings = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies, session.verify, session.cert = (
        settings["proxies"],
        settings["verify"],
        settings["cert"],
    )
    session.auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False
    return session


def _length(response: requests.Response) -> int | None:
    """The body's length the answer announces (None: unknown, or compressed)."""
    if response.headers.get("Content-Encoding", "identity") != "identity":
        return None
    try:
        length = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return length if 0 <= length <= MAX_RESPONSE_BYTES else None


def _urgency(error: RpcError) -> int:
    """Errors about the endpoint (throttle, quota, key) before errors about a call."""
    order = (ErrorKind.UNAUTHORIZED, ErrorKind.QUOTA, ErrorKind.RATE_LIMITED)
    return order.index(error.kind) if error.kind in order else len(order)


def _header(result: Any, block: int) -> tuple[BlockHeader | None, RpcError | None]:
    """The header in one eth_getBlockByNumber result, or the error it amounts to."""
    if result is None:
        return None, RpcError(ErrorKind.BEYOND_HEAD, f"the endpoint has no block {block}")
    if not _has_hash(result):
        return None, RpcError(ErrorKind.MALFORMED, f"block {block}: no header with a hash")
    try:
        number = _quantity(result.get("number"), f"block {block}'s number")
        timestamp = _quantity(result.get("timestamp"), f"block {block}'s timestamp")
    except RpcError as err:
        return None, err
    if number != block:
        return None, RpcError(ErrorKind.MALFORMED, f"block {block}: the header of block {number}")
    if timestamp > MAX_TIMESTAMP:
        return None, RpcError(ErrorKind.MALFORMED, f"block {block}: timestamp {timestamp}")
    return BlockHeader(result["hash"].lower(), timestamp, _bloom(result.get("logsBloom"))), None


def _bloom(value: Any) -> bytes:
    """The 256 bytes of a logsBloom, or b"" for anything else (the checks then skip it)."""
    if isinstance(value, str) and len(value) == 514 and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            return b""
    return b""


def _has_hash(header: Any) -> bool:
    return (
        isinstance(header, dict)
        and isinstance(header.get("hash"), str)
        and bool(_HASH.fullmatch(header["hash"]))
    )


def _quantity(value: Any, what: str) -> int:
    """A 0x quantity of at most 64 bits; "12", "-0x1" or a number are malformed answers."""
    if isinstance(value, str) and _QUANTITY.fullmatch(value):
        number = int(value, 16)
        if number <= MAX_QUANTITY:
            return number
    shown = repr(value[:80]) if isinstance(value, str) else type(value).__name__
    raise RpcError(ErrorKind.MALFORMED, f"{what} returned {shown}, not a quantity")
