"""JSON-RPC transport for one endpoint: web3's HTTP provider and session, orjson for the bodies.

web3's own result formatting (checksummed addresses, HexBytes, AttributeDict) costs ~10x the
fetch itself, so we post through the provider's HTTP session and parse the raw body with orjson.
web3's retry layer is off: it ignores Retry-After and hides timeouts; the worker owns retries.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
import requests
import urllib3
from requests.adapters import HTTPAdapter
from web3 import HTTPProvider

from pipeline.config.endpoints import Endpoint, scrub
from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.classify import classify_exception, decode_response

READ_CHUNK_BYTES = 1 << 20
MAX_RESPONSE_BYTES = 512 << 20  # larger answers are split like any "response too big" error


@dataclass(frozen=True)
class RawResponse:
    """An HTTP answer as received: status, headers and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class RpcClient:
    """Posts JSON-RPC requests to one endpoint and returns decoded results or raises RpcError."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.session = requests.Session()
        # urllib3 must not retry behind our back either: every attempt is counted and paced.
        self.session.mount("http://", HTTPAdapter(max_retries=0))
        self.session.mount("https://", HTTPAdapter(max_retries=0))
        self.provider = HTTPProvider(
            endpoint.url,
            session=self.session,
            exception_retry_configuration=None,
            request_kwargs={"timeout": timeout},
        )
        self._headers = self.provider.get_request_headers()
        self._ids = itertools.count(1)
        self.last_latency_ms = 0.0

    def call(self, method: str, params: list) -> Any:
        """One request's decoded result; the latency of the latest call is in `last_latency_ms`."""
        return self.decode(self.post(method, params))

    def post(self, method: str, params: list) -> RawResponse:
        """One request's raw answer, for callers that parse the body themselves."""
        call = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        try:
            return self._post(orjson.dumps(call))
        except RpcError as err:
            raise self._scrubbed(err) from None

    def block_hashes(self, blocks: list[int]) -> dict[int, str]:
        """The hashes of `blocks` from one JSON-RPC batch request; RpcError unless the endpoint
        answers every call of the batch (not every provider takes batches)."""
        calls = [
            {"jsonrpc": "2.0", "id": i, "method": "eth_getBlockByNumber", "params": [hex(b), False]}
            for i, b in enumerate(blocks)
        ]
        try:
            response = self._post(orjson.dumps(calls))
            answers = orjson.loads(response.body) if response.status == HTTPStatus.OK else None
        except RpcError as err:
            raise self._scrubbed(err) from None
        except orjson.JSONDecodeError:
            answers = None
        found = {
            a["id"]: a["result"]["hash"]
            for a in (answers if isinstance(answers, list) else ())
            if isinstance(a, dict)
            and _has_hash(a.get("result"))
            and a.get("id") in range(len(blocks))
        }
        if len(found) != len(blocks):
            raise RpcError(ErrorKind.MALFORMED, "the batch of block hashes was not answered")
        return {block: found[i] for i, block in enumerate(blocks)}

    def decode(self, response: RawResponse) -> Any:
        """The result of a raw answer, or the RpcError it amounts to."""
        try:
            return decode_response(response.status, response.headers, response.body)
        except RpcError as err:
            raise self._scrubbed(err) from None

    def _scrubbed(self, err: RpcError) -> RpcError:
        # Error bodies and transport errors may quote the URL, and with it an API key.
        err.message = scrub(err.message, self.endpoint.url)
        return err

    def _post(self, body: bytes) -> RawResponse:
        started = time.perf_counter()
        try:
            response = self.session.post(
                self.provider.endpoint_uri,
                data=body,
                headers=self._headers,
                timeout=self.timeout,
                stream=True,
            )
            with response:
                content = self._read_body(response, started + self.timeout)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise classify_exception(exc) from None
        finally:
            self.last_latency_ms = (time.perf_counter() - started) * 1000
        return RawResponse(response.status_code, response.headers, content)

    def _read_body(self, response: requests.Response, deadline: float) -> bytes:
        # requests' timeout bounds each read, not the whole body: an endpoint that trickles a
        # byte now and then would hold us forever. Reading may still fail (truncated, reset).
        chunks, size = [], 0
        # read1 returns what one socket read brings; iter_content would wait for a full chunk.
        while chunk := response.raw.read1(READ_CHUNK_BYTES, decode_content=True):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise RpcError(
                    ErrorKind.RESPONSE_TOO_BIG, f"response over {MAX_RESPONSE_BYTES >> 20} MiB"
                )
            if time.perf_counter() > deadline:
                raise RpcError(ErrorKind.TIMEOUT, f"response took over {self.timeout:g}s")
        return b"".join(chunks)

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
        if not isinstance(receipts, list) or not all(isinstance(r, dict) for r in receipts):
            raise RpcError(ErrorKind.MALFORMED, "eth_getBlockReceipts did not return receipts")
        logs = [log for receipt in receipts for log in receipt.get("logs") or ()]
        if not all(isinstance(log, dict) for log in logs):
            raise RpcError(ErrorKind.MALFORMED, "eth_getBlockReceipts returned malformed logs")
        return logs

    def chain_id(self) -> int:
        """The chain id the endpoint serves."""
        return _quantity(self.call("eth_chainId", []), "eth_chainId")

    def block_number(self, tag: str = "latest") -> int:
        """The number of the endpoint's `latest`, `safe` or `finalized` block."""
        if tag == "latest":
            return _quantity(self.call("eth_blockNumber", []), "eth_blockNumber")
        block = self.call("eth_getBlockByNumber", [tag, False])
        if not isinstance(block, dict):
            raise RpcError(ErrorKind.PERMANENT, f"the endpoint has no {tag!r} block")
        return _quantity(block.get("number"), f"eth_getBlockByNumber({tag})")

    def block_hash(self, block: int) -> str:
        """The hash of block number `block` on the endpoint's chain."""
        header = self.call("eth_getBlockByNumber", [hex(block), False])
        if not isinstance(header, dict) or not isinstance(header.get("hash"), str):
            raise RpcError(ErrorKind.BEYOND_HEAD, f"the endpoint has no block {block}")
        return header["hash"]

    def close(self) -> None:
        """Release pooled connections."""
        self.session.close()


def _has_hash(header: Any) -> bool:
    return isinstance(header, dict) and isinstance(header.get("hash"), str)


def _quantity(value: Any, what: str) -> int:
    try:
        return int(value, 16)
    except (TypeError, ValueError):
        raise RpcError(ErrorKind.MALFORMED, f"{what} returned {str(value)[:80]!r}") from None
