"""A real local S3 for the object-storage tests: moto's server on a free loopback port, started
once per session, with the standard AWS environment pointing at it (the tool's and the CLI
subprocesses' credentials come from there, as a user's would)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow.fs as pafs
import pytest

FAKE_KEY_ID = "AKIAMOTOTESTKEY12345"
FAKE_SECRET = "moto-test-secret-never-shown-0123456789"  # tests check it is never printed


@dataclass
class LocalS3:
    """The running server: its endpoint, a client, and pyarrow's view of it."""

    endpoint: str
    client: object
    fs: pafs.S3FileSystem

    def new_bucket(self) -> str:
        """A fresh, empty bucket for one test."""
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        """Every object key in `bucket`, sorted."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _aws_environment(port: int) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": FAKE_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # never wait for an instance-metadata service
    }


_SAVED: dict[str, str | None] = {}
PORT = pytest.StashKey[int]()
_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")


def pytest_configure(config: pytest.Config) -> None:
    """Point the standard AWS environment at the local S3 before anything starts: the run's
    processes are forked from a server started with the environment of that moment (the first
    run of the session), so it must already hold these (the server itself starts only when a
    test asks for it)."""
    config.stash[PORT] = _free_port()
    for name, value in {**_aws_environment(config.stash[PORT]), **dict.fromkeys(_UNSET)}.items():
        _SAVED[name] = os.environ.get(name)
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore the environment as it was."""
    for name, value in _SAVED.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def s3(pytestconfig: pytest.Config) -> Iterator[LocalS3]:
    """moto's S3 server on the loopback port the AWS environment names (pytest_configure)."""
    boto3 = pytest.importorskip("boto3")
    server_module = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    port = pytestconfig.stash[PORT]
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.session.Session().client("s3")
        fs = pafs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1"
        )
        yield LocalS3(f"http://127.0.0.1:{port}", client, fs)
    finally:
        server.stop()


def visible_rows_once(s3: LocalS3, logs: str) -> tuple[int, int]:
    """What a reader of `logs`/*.parquet (a "bucket/prefix/logs" path) sees now: (rows,
    distinct (block, log index) keys). Every listed file must be whole: a reader never meets
    half a file. A file deleted between the listing and the read (a superseded one) is no
    error: the reader then lists again."""
    import pyarrow.parquet as pq

    while True:
        infos = s3.fs.get_file_info(pafs.FileSelector(logs, allow_not_found=True))
        files = [i.path for i in infos if i.base_name.endswith(".parquet")]
        try:
            tables = [pq.read_table(f, filesystem=s3.fs, columns=["block_number", "log_index"])
                      for f in files]  # fmt: skip
        except OSError:  # FileNotFoundError, or S3's NoSuchKey
            continue
        keys = [(b, i) for t in tables for b, i in zip(*t.to_pydict().values(), strict=True)]
        return len(keys), len(set(keys))
