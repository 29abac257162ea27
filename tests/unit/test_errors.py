"""Classification of RPC failures, checked against a corpus of real error bodies.

Each corpus row goes through `decode_response` with the HTTP status, headers and raw body a
provider sent, and names the expected kind, suggested range (hint), stated range width
(max_blocks) and retry delay. Bodies come from node clients (geth, erigon, reth, Nethermind,
Besu-era wording) and hosted providers as quoted in their public issue trackers; where a source
only quoted part of a message, the row uses that part.
"""

from __future__ import annotations

import email.utils
import pickle
import time

import pytest
import requests

from pipeline.config.endpoints import Endpoint
from pipeline.config.settings import LogFilter
from pipeline.errors import ErrorKind, RpcError
from pipeline.fetch.classify import classify_rpc_error, decode_response
from pipeline.fetch.rpc import RawResponse, RpcClient
from pipeline.verify.audit import receipts_table

K = ErrorKind


def row(id_, status, body, kind, hint=None, max_blocks=None, retry_after=None, headers=None):
    """One corpus case: what arrived (status, headers, body) and what it must classify as."""
    return pytest.param(status, headers or {}, body, kind, hint, max_blocks, retry_after, id=id_)


NGINX_429 = b"<html>\r\n<head><title>429 Too Many Requests</title></head>\r\n<body>\r\n<center><h1>429 Too Many Requests</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
CLOUDFLARE_1015 = b'<!DOCTYPE html><html lang="en-US"><head><title>Access denied | rpc.example.org used Cloudflare to restrict access</title><style>body{font-family:sans-serif}</style></head><body><div id="cf-error-details"><h1>Error 1015</h1><h2>You are being rate limited</h2><p>The owner of this website (rpc.example.org) has banned you temporarily from accessing this website.</p></div></body></html>'
NGINX_502 = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
NGINX_503 = b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n</body>\r\n</html>\r\n"
NGINX_504 = b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n</body>\r\n</html>\r\n"
NGINX_413 = b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
CLOUDFLARE_524 = b"<!DOCTYPE html><html><head><title>rpc.example.org | 524: A timeout occurred</title></head><body><h1>A timeout occurred</h1><span>Error code 524</span></body></html>"
ALCHEMY_QUOTA = b"Monthly capacity limit exceeded. Visit https://dashboard.alchemy.com/settings/billing to upgrade your scaling policy for continued service."

CORPUS = [
    # --- result caps: split, and follow the suggested range when there is one ---
    row(
        "infura-results-with-range-data",
        200,
        b'{"jsonrpc":"2.0","id":47,"error":{"code":-32005,"data":{"from":"0xBDE5F8","limit":10000,"to":"0x102DBCC"},"message":"query returned more than 10000 results. Try with this block range [0xBDE5F8, 0x102DBCC]."}}',
        K.TOO_MANY_RESULTS,
        hint=(0xBDE5F8, 0x102DBCC),
    ),
    row(
        "alchemy-log-response-size-2k",
        200,
        b'{"jsonrpc":"2.0","id":43,"error":{"code":-32602,"message":"Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range and no limit on the response size, or you can request any block range with a cap of 10K logs in the response. Based on your parameters and the response size limit, this block range should work: [0x0, 0xd043b8]"}}',
        K.TOO_MANY_RESULTS,
        hint=(0, 0xD043B8),
        max_blocks=2000,
    ),
    row(
        "reth-max-results-retry-range",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"query exceeds max results 20000, retry with the range 23879634-23879696"}}',
        K.TOO_MANY_RESULTS,
        hint=(23879634, 23879696),
    ),
    row(
        "zksync-results-try-range",
        200,
        b'{"jsonrpc":"2.0","error":{"code":-32602,"message":"Query returned more than 10000 results. Try with this block range [0x0, 0x30f]."},"id":74}',
        K.TOO_MANY_RESULTS,
        hint=(0, 0x30F),
    ),
    row(
        "erigon-too-many-logs",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"query returns too many logs, narrow your filter: 20000"}}',
        K.TOO_MANY_RESULTS,
    ),
    row(
        "arbitrum-logs-matched-exceed-limit",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"logs matched by query exceeds limit of 10000"}}',
        K.TOO_MANY_RESULTS,
    ),
    row(
        "zetachain-results-code-32000",
        200,
        b'{"jsonrpc":"2.0","id":"agvt6p2g","error":{"code":-32000,"message":"query returned more than 10000 results"}}',
        K.TOO_MANY_RESULTS,
    ),
    row(
        "horizen-log-size-count-is-no-width",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Log response size exceeded. You can make eth_getLogs requests with up to a 10000 response size. Limit some parameters and try again."}}',
        K.TOO_MANY_RESULTS,
    ),
    row(
        "bsc-bare-limit-exceeded",
        200,
        b'{"jsonrpc":"2.0","id":49,"error":{"code":-32005,"message":"limit exceeded"}}',
        K.TOO_MANY_RESULTS,
    ),
    # --- response size caps ---
    row(
        "1rpc-response-bytes",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"response size should not greater than 10000000 bytes"}}',
        K.RESPONSE_TOO_BIG,
    ),
    row(
        "optimism-backend-response-too-large",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32020,"message":"backend response too large"}}',
        K.RESPONSE_TOO_BIG,
    ),
    row(
        "zksync-response-is-too-big",
        200,
        b'{"jsonrpc":"2.0","error":{"code":-32008,"message":"Response is too big"},"id":74}',
        K.RESPONSE_TOO_BIG,
    ),
    # --- block range caps: split at the stated width ---
    row(
        "quicknode-413-limited-to-10000-range",
        413,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32614,"message":"eth_getLogs is limited to a 10,000 range"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=10000,
    ),
    row(
        "quicknode-blocks-range",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"eth_getLogs and eth_newFilter are limited to a 10,000 blocks range"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=10000,
    ),
    row(
        "hyperliquid-max-block-range",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"query exceeds max block range 100000"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=100000,
    ),
    row(
        "publicnode-exceed-maximum-block-range",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"exceed maximum block range: 50000"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=50000,
    ),
    row(
        "ankr-block-range-too-wide",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"block range is too wide"}}',
        K.RANGE_TOO_LARGE,
    ),
    row(
        "drpc-freetier-code-35",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":35,"message":"ranges over 10000 blocks are not supported on freetier"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=10000,
    ),
    row(
        "blockpi-limited-to-1024",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"eth_getLogs is limited to 1024 block range"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=1024,
    ),
    row(
        "infura-range-exceeds-limit",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"range 1000000 exceeds limit of 10000"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=10000,
    ),
    row(
        "tenderly-detail-in-data-payload",
        200,
        b'{"id":3041,"jsonrpc":"2.0","error":{"code":-32602,"message":"invalid params","data":{"error_id":"4ed94073-0317-4648-a167-107fba5f44b3","payload":"range 9009594 is bigger than range limit 2000"}}}',
        K.RANGE_TOO_LARGE,
        max_blocks=2000,
    ),
    row(
        "morph-echoed-width-and-limit",
        200,
        b'{"jsonrpc":"2.0","id":10,"error":{"code":-32000,"message":"block range is larger than max block range, block range = 5120, max block range = 5000"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=5000,
    ),
    row(
        "alchemy-free-500-with-range",
        200,
        b'{"jsonrpc":"2.0","id":183,"error":{"code":-32600,"message":"You can make eth_getLogs requests with up to a 500 block range. Based on your parameters, this block range should work: [0x123c9b2, 0x123cba5]"}}',
        K.RANGE_TOO_LARGE,
        hint=(0x123C9B2, 0x123CBA5),
        max_blocks=500,
    ),
    row(
        "candle-batch-of-one",
        200,
        b'[{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"block range too high"}}]',
        K.RANGE_TOO_LARGE,
    ),
    row(
        "erigon-range-exceeds-server-limit",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"query block range exceeds server limit, narrow your filter: 1000"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=1000,
    ),
    row(
        "cdk-erigon-32005-max-range",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"block range too large, max range: 1000"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=1000,
    ),
    row(
        "range-and-max-both-stated",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"eth_getLogs block range too large, range: 855077, max: 3500"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=3500,
    ),
    row(
        "avalanche-echoed-request-is-no-hint",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"requested too many blocks from 53164508 to 53166556, maximum is set to 2048"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=2048,
    ),
    row(
        "cloudflare-max-range",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32047,"message":"Max range: 800"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=800,
    ),
    row(
        "coinbase-at-most-blocks",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"please limit the query to at most 1000 blocks"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=1000,
    ),
    row(
        "blast-plan-requested-vs-allowed",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"eth_getLogs exceeds the range allowed for your plan (50000 > 10000)."}}',
        K.RANGE_TOO_LARGE,
        max_blocks=10000,
    ),
    row(
        "chainstack-range-limit-exceeded",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Block range limit exceeded."}}',
        K.RANGE_TOO_LARGE,
    ),
    row(
        "merkle-max-10k-blocks",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"eth_getLogs range is too large, max is 10k blocks"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=10000,
    ),
    row(
        "ankr-blocks-distance",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"maximum [from, to] blocks distance: 10000"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=10000,
    ),
    row(
        "openethereum-dotted-thousands",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"Limit exceeded: Query requested more than 10.000 blocks"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=10000,
    ),
    row(
        "frontier-too-wide-maximum",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"block range is too wide (maximum 10)"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=10,
    ),
    row(
        "somnia-range-exceeds",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"block range exceeds 1000"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=1000,
    ),
    row(
        "swell-greater-than-max",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"block range greater than 1000 max"}}',
        K.RANGE_TOO_LARGE,
        max_blocks=1000,
    ),
    row(
        "scroll-bigger-than-maxblockrange",
        200,
        b'{"jsonrpc":"2.0","id":"id","error":{"code":-32000,"message":"block range is bigger than maxBlockRange"}}',
        K.RANGE_TOO_LARGE,
    ),
    # --- rate limits: pause, honour the stated delay ---
    row(
        "http-429-retry-after-3",
        429,
        b"Too Many Requests",
        K.RATE_LIMITED,
        retry_after=3.0,
        headers={"Retry-After": "3"},
    ),
    row("nginx-429-page", 429, NGINX_429, K.RATE_LIMITED),
    row("cloudflare-1015-page", 429, CLOUDFLARE_1015, K.RATE_LIMITED),
    row(
        "infura-rate-flat-backoff-zero",
        429,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"project ID request rate exceeded","data":{"see":"https://infura.io/dashboard","current_rps":13.333,"allowed_rps":10.0,"backoff_seconds":0.0}}}',
        K.RATE_LIMITED,
        retry_after=0.0,
    ),
    row(
        "infura-rate-nested-backoff",
        429,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"project ID request rate exceeded","data":{"rate":{"allowed_rps":1,"backoff_seconds":30,"current_rps":1.4},"see":"https://infura.io/dashboard"}}}',
        K.RATE_LIMITED,
        retry_after=30.0,
    ),
    row(
        "alchemy-compute-units-per-second",
        429,
        b'{"jsonrpc":"2.0","id":474,"error":{"code":429,"message":"Your app has exceeded its compute units per second capacity. If you have retries enabled, you can safely ignore this message. If not, check out https://docs.alchemy.com/reference/throughput"}}',
        K.RATE_LIMITED,
    ),
    row(
        "quicknode-credits-per-second",
        200,
        b'{"jsonrpc":"2.0","id":"1","error":{"code":-32012,"message":"credits limited to 6000/sec"}}',
        K.RATE_LIMITED,
    ),
    row(
        "retry-in-10s",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"Too many requests, reason: call rate limit exhausted, retry in 10s"}}',
        K.RATE_LIMITED,
        retry_after=10.0,
    ),
    row(
        "base-nested-over-rate-limit",
        200,
        b'{"jsonrpc":"2.0","id":1115125,"error":{"code":-32000,"message":"429 Too Many Requests: {\\"jsonrpc\\":\\"2.0\\",\\"error\\":{\\"code\\":-32016,\\"message\\":\\"over rate limit\\"},\\"id\\":2239375}\\n"}}',
        K.RATE_LIMITED,
    ),
    row(
        "web3-max-rate-limit-reached",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"Max rate limit reached"}}',
        K.RATE_LIMITED,
    ),
    row(
        "fractional-retry-after-lowercase",
        429,
        b"",
        K.RATE_LIMITED,
        retry_after=1.5,
        headers={"retry-after": "1.5"},
    ),
    # --- quota, auth: the endpoint is out for the run ---
    row(
        "alchemy-monthly-capacity-json-403",
        403,
        b'{"jsonrpc":"2.0","id":6570,"error":{"code":-32600,"message":"Monthly capacity limit exceeded. Visit https://dashboard.alchemy.com/settings/billing to upgrade your scaling policy for continued service."}}',
        K.QUOTA,
    ),
    row("alchemy-monthly-capacity-text-403", 403, ALCHEMY_QUOTA, K.QUOTA),
    row(
        "infura-daily-count-is-quota-not-rate",
        429,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"daily request count exceeded, request rate limited","data":{"rate":{"allowed_rps":1,"backoff_seconds":30,"current_rps":1.266666666666667},"see":"https://infura.io/dashboard"}}}',
        K.QUOTA,
        retry_after=30.0,
    ),
    row(
        "account-quota",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"your account has exceeded its quota"}}',
        K.QUOTA,
    ),
    row("infura-invalid-project-id-401", 401, b"invalid project id\n", K.UNAUTHORIZED),
    row(
        "infura-project-id-settings",
        200,
        b'{"jsonrpc":"2.0","error":{"code":-32002,"message":"rejected due to project ID settings"}}',
        K.UNAUTHORIZED,
    ),
    row(
        "alchemy-must-be-authenticated",
        401,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"Must be authenticated!"}}',
        K.UNAUTHORIZED,
    ),
    row("plain-unauthorized-401", 401, b"Unauthorized", K.UNAUTHORIZED),
    row(
        "invalid-api-key",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"invalid api key"}}',
        K.UNAUTHORIZED,
    ),
    # --- filters the endpoint will not take ---
    row(
        "geth-addresses-per-position",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"exceed max addresses or topics per search position"}}',
        K.TOO_MANY_FILTERS,
    ),
    row(
        "erigon-maximum-addresses",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"query exceeds the maximum of 1000 addresses or topics per search position"}}',
        K.TOO_MANY_FILTERS,
    ),
    row(
        "reth-detail-in-data-string",
        200,
        b'{"error":{"code":-32602,"data":"exceeded maximum topics len at line 7 column 5","message":"Invalid params"},"id":74,"jsonrpc":"2.0"}',
        K.TOO_MANY_FILTERS,
    ),
    row(
        "less-number-of-addresses",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"specify less number of addresses"}}',
        K.TOO_MANY_FILTERS,
    ),
    row("nginx-413-request-entity", 413, NGINX_413, K.TOO_MANY_FILTERS),
    # --- the endpoint lacks the blocks: behind its head, or history pruned ---
    row(
        "geth-beyond-head",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"block range extends beyond current head block"}}',
        K.BEYOND_HEAD,
    ),
    row(
        "nethermind-could-not-be-found",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"8633830 could not be found"}}',
        K.BEYOND_HEAD,
    ),
    row(
        "geth-header-not-found",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"header not found"}}',
        K.BEYOND_HEAD,
    ),
    row(
        "geth-pruned-4444",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":4444,"message":"pruned history unavailable"}}',
        K.PRUNED,
    ),
    row(
        "cloudflare-older-than-128",
        200,
        b'{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request. Requested data is older than 128 blocks."},"id":49}',
        K.PRUNED,
    ),
    row(
        "erigon-data-before-not-available",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"state transitaion failed: seek with txNum=1962853355 but data before txNum=2662500000 is not available: blockNum=16999999, txNum=1962853355"}}',
        K.PRUNED,
    ),
    row(
        "missing-trie-node",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"missing trie node 1e4e6a4b2b1c7f5a (path )"}}',
        K.PRUNED,
    ),
    # --- timeouts ---
    row(
        "alchemy-query-timeout-mentions-range",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"Query timeout exceeded. Consider reducing your block range."}}',
        K.TIMEOUT,
    ),
    row(
        "query-timeout-of-10-seconds",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"query timeout of 10 seconds exceeded"}}',
        K.TIMEOUT,
    ),
    row(
        "context-deadline-exceeded",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"context deadline exceeded"}}',
        K.TIMEOUT,
    ),
    row(
        "execution-timeout",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"execution timeout"}}',
        K.TIMEOUT,
    ),
    row("nginx-504-page", 504, NGINX_504, K.TIMEOUT),
    row("plain-gateway-timeout", 504, b"Gateway Timeout", K.TIMEOUT),
    row("cloudflare-524-page", 524, CLOUDFLARE_524, K.TIMEOUT),
    # --- endpoint faults ---
    row(
        "envoy-upstream-connect-error",
        503,
        b"upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        K.SERVER,
    ),
    row(
        "base-no-healthy-backend",
        503,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32011,"message":"no backend is currently healthy to serve traffic"}}',
        K.SERVER,
    ),
    row("nginx-502-page", 502, NGINX_502, K.SERVER),
    row(
        "nginx-503-page-retry-after",
        503,
        NGINX_503,
        K.SERVER,
        retry_after=120.0,
        headers={"Retry-After": "120"},
    ),
    # --- our request, as the endpoint saw it ---
    row(
        "method-does-not-exist",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"The method eth_getLogs does not exist/is not available"}}',
        K.PERMANENT,
    ),
    row(
        "geth-invalid-block-range-is-not-a-size",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"invalid block range params"}}',
        K.PERMANENT,
    ),
    row(
        "bare-invalid-params",
        200,
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"invalid params"}}',
        K.PERMANENT,
    ),
    row(
        "parse-error-is-the-endpoints-fault",
        200,
        b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}',
        K.MALFORMED,
    ),
]


@pytest.mark.parametrize("status,headers,body,kind,hint,max_blocks,retry_after", CORPUS)
def test_corpus(status, headers, body, kind, hint, max_blocks, retry_after):
    with pytest.raises(RpcError) as caught:
        decode_response(status, headers, body)
    err = caught.value
    assert (err.kind, err.hint, err.max_blocks, err.retry_after) == (
        kind,
        hint,
        max_blocks,
        retry_after,
    ), err.message


def _rpc(code: int, message: str) -> bytes:
    return b'{"jsonrpc":"2.0","id":1,"error":{"code":%d,"message":"%s"}}' % (code, message.encode())


@pytest.mark.parametrize(
    "message,kind",
    [
        ("query returned more than 10000 results", K.TOO_MANY_RESULTS),
        ("project ID request rate exceeded", K.RATE_LIMITED),
        ("block range is too large", K.RANGE_TOO_LARGE),
    ],
)
def test_code_32005_means_what_its_message_says(message, kind):
    with pytest.raises(RpcError) as caught:
        decode_response(200, {}, _rpc(-32005, message))
    assert caught.value.kind is kind


@pytest.mark.parametrize(
    "status,body,kind",
    [
        # A method-not-found code cannot outvote a message about the range.
        (200, _rpc(-32601, "block range too large"), K.RANGE_TOO_LARGE),
        # The rate-limit code and status cannot outvote a result cap.
        (429, _rpc(429, "query returned more than 10000 results"), K.TOO_MANY_RESULTS),
        # Without telling words, the code decides ...
        (200, _rpc(-32005, "something went wrong"), K.RATE_LIMITED),
        (200, _rpc(-32600, "bad request"), K.PERMANENT),
        # ... and a specific HTTP status outranks a generic code.
        (401, _rpc(-32600, "bad request"), K.UNAUTHORIZED),
        (200, _rpc(-32000, "something went wrong"), K.SERVER),
        # A request-count limit is a rate, not the bare "limit exceeded" result cap.
        (200, _rpc(-32000, "request limit exceeded"), K.RATE_LIMITED),
        (200, _rpc(-32000, "limit exceeded"), K.TOO_MANY_RESULTS),
    ],
)
def test_message_then_code_then_status(status, body, kind):
    with pytest.raises(RpcError) as caught:
        decode_response(status, {}, body)
    assert caught.value.kind is kind


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body><h1>Welcome to nginx!</h1></body></html>",
        b"OK",
        b"",
        b'{"jsonrpc":"2.0","id":1,"result":[{"a"',
        b"[]",
        b'[{"jsonrpc":"2.0","id":1,"result":[]},{"jsonrpc":"2.0","id":2,"result":[]}]',
        b"42",
        b'"result"',
        b"null",
        b'{"jsonrpc":"2.0","id":1}',
        b'{"jsonrpc":"2.0","id":1,"error":null}',
        b'{"jsonrpc":"2.0","id":1,"error":17}',
    ],
    ids=lambda body: body[:30].decode() or "empty",
)
def test_what_is_not_a_json_rpc_answer_at_200_is_malformed(body):
    with pytest.raises(RpcError) as caught:
        decode_response(200, {}, body)
    assert caught.value.kind is K.MALFORMED


@pytest.mark.parametrize("status", [500, 502, 503])
@pytest.mark.parametrize(
    "body", [b"", b"Internal Server Error", b"<html><body>Something broke</body></html>", b"{"]
)
def test_bodies_without_json_rpc_at_5xx_are_server_errors(status, body):
    with pytest.raises(RpcError) as caught:
        decode_response(status, {}, body)
    assert caught.value.kind is K.SERVER
    assert caught.value.message.startswith(f"HTTP {status}: ")


@pytest.mark.parametrize(
    "body,result",
    [
        (b'{"jsonrpc":"2.0","id":1,"result":[]}', []),
        (b'{"jsonrpc":"2.0","id":1,"error":null,"result":"0x10"}', "0x10"),
        (b'{"jsonrpc":"2.0","id":1,"result":null}', None),
        (b'[{"jsonrpc":"2.0","id":1,"result":"0x1"}]', "0x1"),
    ],
)
def test_successful_responses_return_the_result(body, result):
    assert decode_response(200, {}, body) == result


@pytest.mark.parametrize(
    "error,kind",
    [
        ("rate limit exceeded", K.RATE_LIMITED),  # some gateways send the error as a string
        ("", K.SERVER),
        ({}, K.SERVER),  # neither code nor message
        ({"data": {"from": "0x10", "to": "0x20"}}, K.TOO_MANY_RESULTS),  # only Infura's range
        (["not", "an", "object"], K.MALFORMED),
    ],
)
def test_odd_error_objects(error, kind):
    assert classify_rpc_error(error).kind is kind


def test_hints_are_kept_as_given_even_when_nonsense():
    # The worker decides whether to trust a hint; an inverted one or an echo of the request
    # (reth did that, paradigmxyz/reth#23810) is reported unchanged.
    inverted = classify_rpc_error({"code": -32005, "data": {"from": 32, "to": "0x10"}})
    assert inverted.hint == (32, 16)
    echo = classify_rpc_error(
        {
            "code": -32602,
            "message": "query exceeds max results 20000, retry with the range 25766988-25775072",
        }
    )
    assert echo.hint == (25766988, 25775072)


def test_retry_after_accepts_http_dates_and_any_header_case():
    future = email.utils.formatdate(time.time() + 60, usegmt=True)
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    for headers, low, high in [
        ({"Retry-After": future}, 55.0, 60.0),
        ({"RETRY-AFTER": past}, 0.0, 0.0),
        (requests.structures.CaseInsensitiveDict({"retry-after": "7"}), 7.0, 7.0),
        ({"Retry-After": "-5"}, 0.0, 0.0),
    ]:
        with pytest.raises(RpcError) as caught:
            decode_response(429, headers, b"")
        assert low <= caught.value.retry_after <= high, headers
    with pytest.raises(RpcError) as caught:
        decode_response(429, {"Retry-After": "soon"}, b"")
    assert caught.value.retry_after is None


def test_rpc_error_pickles_with_all_fields():
    err = RpcError(K.TOO_MANY_RESULTS, "key=abc123", 2.5, (10, 20), 2000)
    err.message = "key=***"  # what the caller does to scrub secrets before the error travels
    data = pickle.dumps(err)
    copy = pickle.loads(data)
    assert (copy.kind, copy.message, copy.retry_after, copy.hint, copy.max_blocks) == (
        K.TOO_MANY_RESULTS,
        "key=***",
        2.5,
        (10, 20),
        2000,
    )
    assert str(copy) == "too_many_results: key=***"
    assert b"abc123" not in data


def test_str_follows_the_current_message():
    err = RpcError(K.RATE_LIMITED, "before")
    err.message = "after"
    assert str(err) == "rate_limited: after"
    assert (err.retry_after, err.hint, err.max_blocks) == (None, None, None)


def test_a_url_quoted_in_an_error_page_does_not_decide_the_class():
    err = classify_rpc_error(
        {"code": -32000, "message": "no backend for POST http://h/v2/K?apikey=X"}, 500
    )
    assert err.kind is ErrorKind.SERVER
    body = b"upstream https://rpc.example/v3/KEY?api_key=1 failed"
    with pytest.raises(RpcError) as caught:
        decode_response(500, {}, body)
    assert caught.value.kind is ErrorKind.SERVER


def test_a_message_repeated_in_the_data_is_said_once():
    # Hardhat's node: {"code": -32004, "message": M, "data": {"message": M, ...}}
    said = "Method eth_getBlockReceipts is not supported"
    error = classify_rpc_error({"code": -32004, "message": said, "data": {"message": said}})
    assert error.kind is ErrorKind.PERMANENT
    assert str(error).count(said) == 1, str(error)


def test_the_word_upgrade_alone_is_not_a_quota():
    # anvil's answer to a GET (a WebSocket handshake it expected) is no exhausted quota.
    error = classify_rpc_error({"message": "Connection header did not include 'upgrade'"}, 400)
    assert error.kind is not ErrorKind.QUOTA
    plan = classify_rpc_error({"message": "free tier exceeded, upgrade your plan"}, 200)
    assert plan.kind is ErrorKind.QUOTA


@pytest.mark.parametrize("read", ["receipts", "headers"])
def test_an_answer_to_a_batch_cut_off_is_not_a_refusal_for_the_batchs_size(mocker, read):
    # Our own words for what was being read ("the batch of block receipts") made any unreadable
    # answer look like a limit on batches: the checks halved their batches and set a ceiling, down
    # to one call a request, against an endpoint that cuts off a fifth of its answers at random.
    client = RpcClient(Endpoint("e", "http://127.0.0.1:1", "e"), 1.0)
    cut = RawResponse(200, {"content-type": "application/json"}, b'[{"jsonrpc":"2.0","id":0,"re')
    mocker.patch.object(client, "_post", return_value=cut)
    with pytest.raises(RpcError) as caught:
        if read == "receipts":
            receipts_table(client, [1, 2, 3], LogFilter(), 1, False)
        else:
            client.block_headers([1, 2, 3])
    assert caught.value.kind is ErrorKind.MALFORMED and not caught.value.about_batch
