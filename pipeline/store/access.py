"""Before anything runs: can this run reach its object store? And every failure of the store,
classified once, as the one line that says what to fix (credentials never shown)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.store.lease import LeaseLost, lease_held
from pipeline.store.locks import output_lock
from pipeline.store.target import Store, open_store
from pipeline.store.uri import scrub

# Words in pyarrow's and boto's messages, by what the user has to fix.
_DENIED = (
    "AccessDenied", "ACCESS_DENIED", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "InvalidToken", "ExpiredToken", "Forbidden", "403", "AuthorizationHeaderMalformed",
)  # fmt: skip
_NO_BUCKET = ("NoSuchBucket", "NO_SUCH_BUCKET", "404", "Not Found", "does not exist")
_UNREACHABLE = (
    "NETWORK_CONNECTION", "Couldn't connect", "curlCode", "Could not connect",
    "EndpointConnectionError", "ConnectTimeout", "Connection refused", "Failed to connect",
    "timed out", "Name or service not known",
)  # fmt: skip
_NO_CREDENTIALS = (
    "NoCredentialsError", "PartialCredentialsError", "No credentials",
    "Unable to locate credentials", "MissingAuthenticationToken",
)  # fmt: skip


def open_checked(output: Path | str, staging: Path | None = None) -> Store:
    """The store --output names (see store.target.open_store), once it is known to be usable:
    a one-line ConfigError otherwise. The Ray engine opens its store with this too."""
    store = open_store(output, staging)
    check_store(store)
    return store


@contextlib.contextmanager
def holding(store: Store) -> Iterator[Store]:
    """Hold `store` for one run: object storage's lease first (it keeps out runs of any
    machine, and a refused run has written nothing, not even its staging folder), then the
    local folder's lock (the staging folder's, for object storage). Yields the store whose
    commits the lease fences; hand it to prepare_output and the writer."""
    with contextlib.ExitStack() as stack:
        try:
            held = stack.enter_context(lease_held(store))
        except OSError as exc:  # the store failed while the lease was taken
            raise ConfigError(store_error(store.uri, exc)) from None
        stack.enter_context(output_lock(held.staging))
        yield held


def check_store(store: Any) -> None:
    """Raise a one-line ConfigError unless the run can list and write the store (nothing is
    written: listing the prefix and, for S3, reading the bucket's metadata)."""
    if not store.remote:
        return
    if store.uri.startswith("s3://"):
        _check_s3(store.uri, store.endpoint, store.region)
    try:
        store.names("")
    except (OSError, ValueError) as exc:
        raise ConfigError(store_error(store.uri, exc)) from None


def _check_s3(uri: str, endpoint: str, region: str) -> None:
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise ConfigError(
            f"--output {uri} needs boto3 (for the lease): pip install -e '.[s3]'"
        ) from None
    config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 1})
    bucket = uri.removeprefix("s3://").split("/", 1)[0]
    where = {"endpoint_url": endpoint or None, "region_name": region or None}
    try:
        session = boto3.session.Session()
        if session.get_credentials() is None:
            raise ConfigError(_no_credentials(uri))
        session.client("s3", config=config, **where).head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as exc:  # a named profile missing, too
        raise ConfigError(store_error(uri, exc)) from None


def store_error(uri: str, exc: BaseException) -> str:
    """What went wrong reaching `uri`, and what to fix, in one line without credentials."""
    if isinstance(exc, LeaseLost):
        return f"--output {uri}: {exc}: wait for the other run, or choose another --output"
    detail = scrub(f"{type(exc).__name__}: {exc}").strip().splitlines()
    text = detail[0][:200] if detail else type(exc).__name__
    code = _code(exc)
    bucket = uri.split("://", 1)[-1].split("/", 1)[0]
    if "ProfileNotFound" in text:
        return f"--output {uri}: {text.split(': ', 1)[-1]}: fix AWS_PROFILE or ~/.aws/config"
    if _any(_NO_CREDENTIALS, text):
        return _no_credentials(uri)
    if _any(_DENIED, code or text):
        return (
            f"--output {uri}: access denied ({code or text}): check the credentials "
            "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and their rights"
        )
    if _any(_NO_BUCKET, code or text):
        return f"--output {uri}: bucket {bucket} does not exist: create it, or fix the name"
    if _any(_UNREACHABLE, text):
        return (
            f"--output {uri}: cannot reach the object store ({text}): check the network "
            "and AWS_ENDPOINT_URL"
        )
    return f"--output {uri}: cannot use the object store ({text})"


def _no_credentials(uri: str) -> str:
    return (
        f"--output {uri}: no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
        "(or AWS_PROFILE) in the environment"
    )


def _code(exc: BaseException) -> str:
    """The error code of a botocore ClientError ("404", "AccessDenied"), else ""."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _any(words: tuple[str, ...], text: str) -> bool:
    return any(word in text for word in words)
