"""The lease of an object-storage prefix: one run writes to it at a time, from any machine.

A local folder has its flock (store.locks); object storage has no locks, so a run holds a lease
object, PREFIX/.lease.json: {owner, host, pid, expires}. It is created with a conditional write
(S3 `If-None-Match: *`: of two runs, exactly one creates it), renewed every RENEW_EVERY_S
while the run goes on (`If-Match` its ETag: a renewal never overwrites another run's lease),
and deleted at the end. A lease that expired (its run died without releasing it) is taken over,
again conditionally on the ETag seen; so is one left by a run of this machine whose process is
gone (a killed run resumes at once). Every upload of the run (final files, the manifest, the
summary) first checks that the lease is still its own and not about to expire
(`verify_lease`): a run that lost its lease stops before it could overwrite the next run's
files or manifest.

Stores without conditional writes (pyarrow's GCS, HDFS, Azure filesystems) get the same lease,
written read-check-write: it refuses a second run that starts while the first one runs, but two
runs starting within the same second could both pass (said in the README).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import orjson

from pipeline.errors import ConfigError

LEASE_KEY = ".lease.json"
TTL_S = 60.0  # how long a lease holds without renewal: a run from another machine waits so long
RENEW_EVERY_S = 15.0
COMMIT_MARGIN_S = 15.0  # a commit needs at least this much of the lease left
ORPHAN_EXIT_S = 2.0  # a dead run's children end within a second (run.lifecycle)


class LeaseLost(OSError):
    """This run no longer holds the lease of its output prefix; it must stop writing."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, until when (seconds since the epoch), and the object's version."""

    owner: str
    host: str
    pid: int
    expires: float
    version: str = ""

    def document(self) -> bytes:
        """The lease object's body."""
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires))
        fields = {"owner": self.owner, "host": self.host, "pid": self.pid,
                  "expires": self.expires, "expires_utc": when}  # fmt: skip
        return orjson.dumps(fields, option=orjson.OPT_INDENT_2)

    def stale(self, now: float) -> bool:
        """Expired, or left by a run of this machine whose process is gone."""
        return self.expires <= now or (self.host == socket.gethostname() and _gone(self.pid))


def lease_held(store: Any) -> contextlib.AbstractContextManager[Any]:
    """Hold `store`'s lease for the `with` block (a no-op for a local folder): yields the store
    whose commits are fenced by it. Raises ConfigError when another run holds it."""
    if not store.remote:
        return contextlib.nullcontext(store)
    return _held(store)


@contextlib.contextmanager
def _held(store: Any) -> Iterator[Any]:
    cond = Conditional(store)
    owner = acquire(cond, store.uri)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew_until, args=(cond, owner, stop), daemon=True)
    renewer.start()
    try:
        yield replace(store, owner=owner)
    finally:
        stop.set()
        renewer.join(5)
        release(cond, owner)


def acquire(cond: Conditional, uri: str) -> str:
    """Create the lease (or take over a stale one); the new owner id, or a ConfigError."""
    owner = uuid.uuid4().hex
    mine = Holder(owner, socket.gethostname(), os.getpid(), time.time() + TTL_S)
    if cond.create(mine.document()):
        return owner
    held = cond.read()
    if held is not None and not held.stale(time.time()):
        when = time.strftime("%H:%M:%S UTC", time.gmtime(held.expires))
        raise ConfigError(
            f"another backfill (on {held.host}, pid {held.pid}) is writing to {uri} (its lease "
            f"runs to {when} and is renewed while it runs): wait for it, or choose another --output"
        )
    if held is not None and held.expires > time.time():
        time.sleep(ORPHAN_EXIT_S)  # its writer (a child of the dead run) ends by then
    mine = replace(mine, expires=time.time() + TTL_S)
    taken = cond.create(mine.document()) if held is None else cond.replace(mine.document(), held)
    if not taken:
        raise ConfigError(f"another backfill took the lease of {uri} just now: choose another "
                          "--output, or wait for it")  # fmt: skip
    return owner


def verify_lease(store: Any, cond: Conditional | None = None) -> None:
    """Raise LeaseLost unless `store.owner` holds the lease with COMMIT_MARGIN_S left (read
    through `cond`, or a new client)."""
    held = (cond or Conditional(store)).read()
    if held is None or held.owner != store.owner:
        raise LeaseLost(f"this run lost the lease of {store.uri} (another run took it over)")
    if held.expires - time.time() < COMMIT_MARGIN_S:
        raise LeaseLost(f"this run's lease of {store.uri} was not renewed in time")


def release(cond: Conditional, owner: str) -> None:
    """Delete the lease if it is still `owner`'s (best effort: it expires anyway)."""
    with contextlib.suppress(OSError):
        held = cond.read()
        if held is not None and held.owner == owner:
            cond.delete(held)


def _renew_until(cond: Conditional, owner: str, stop: threading.Event) -> None:
    while not stop.wait(RENEW_EVERY_S):
        with contextlib.suppress(OSError):  # a passing network fault: the next try may work
            held = cond.read()
            if held is None or held.owner != owner:
                return  # lost: the writer's next commit finds out and stops the run
            cond.replace(replace(held, expires=time.time() + TTL_S).document(), held)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Conditional:
    """Conditional writes of the lease object: S3's through boto3 (If-None-Match, If-Match);
    other stores read-check-write through pyarrow."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.key = LEASE_KEY
        s3 = store.uri.startswith("s3://")
        self.client = s3_client(store.endpoint, store.region) if s3 else None
        self.s3 = self.client is not None
        if self.s3:
            bucket, _, prefix = store.uri.removeprefix("s3://").partition("/")
            self.bucket, self.object = bucket, f"{prefix}/{LEASE_KEY}" if prefix else LEASE_KEY

    def read(self) -> Holder | None:
        """The current lease with its version, or None."""
        if self.s3:
            get = lambda c: c.get_object(Bucket=self.bucket, Key=self.object)  # noqa: E731
            found = _s3_call(self.client, get)
            if found is None:
                return None
            body, version = found["Body"].read(), found["ETag"]
        else:
            body = self.store.read(self.key)
            if body is None:
                return None
            version = hashlib.sha256(body).hexdigest()
        return _holder(body, version)

    def create(self, body: bytes) -> bool:
        """Create the lease unless one exists; whether it was created."""
        if self.s3:
            put = lambda c: c.put_object(  # noqa: E731
                Bucket=self.bucket, Key=self.object, Body=body, IfNoneMatch="*"
            )
            return _s3_call(self.client, put, conflict=True) is not None
        if self.store.exists(self.key):
            return False
        self.store.write(self.key, body)
        return True

    def replace(self, body: bytes, seen: Holder) -> bool:
        """Overwrite the lease if it is still the version `seen`; whether it was."""
        if self.s3:
            put = lambda c: c.put_object(  # noqa: E731
                Bucket=self.bucket, Key=self.object, Body=body, IfMatch=seen.version
            )
            return _s3_call(self.client, put, conflict=True) is not None
        now = self.read()
        if now is None or now.version != seen.version:
            return False
        self.store.write(self.key, body)
        return True

    def delete(self, seen: Holder) -> None:
        """Delete the lease (read just before as `seen`)."""
        if self.s3:
            delete = lambda c: c.delete_object(Bucket=self.bucket, Key=self.object)  # noqa: E731
            _s3_call(self.client, delete)
        else:
            self.store.delete(self.key)


def _holder(body: bytes, version: str) -> Holder:
    try:
        doc = orjson.loads(body)
        return Holder(str(doc["owner"]), str(doc["host"]), int(doc["pid"]),
                      float(doc["expires"]), version)  # fmt: skip
    except (ValueError, KeyError, TypeError):
        # Not ours to judge: an unreadable lease is treated as expired (taken over on ETag).
        return Holder("", "", 0, 0.0, version)


def s3_client(endpoint: str = "", region: str = "") -> Any:
    """A boto3 S3 client from the standard AWS environment, at `endpoint` in `region` when
    given (None without boto3)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        return None
    config = Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 3})
    where = {"endpoint_url": endpoint or None, "region_name": region or None}
    return boto3.session.Session().client("s3", config=config, **where)


def _s3_call(client: Any, call: Any, conflict: bool = False) -> Any:
    """`call(client)`'s answer; None when the object is missing or (with `conflict`) when a
    condition failed. Any other failure is an OSError."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(client)
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "404") or status == 404:
            return None
        if conflict and (
            status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict")
        ):
            return None
        raise OSError(f"lease object: {code or status}") from None
    except BotoCoreError as err:
        raise OSError(f"lease object: {type(err).__name__}") from None
