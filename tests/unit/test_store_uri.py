"""--output URIs, the Store interface on both sides, the lease without conditional writes, and
the one classification of object-storage errors (single functions: no server needed)."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import orjson
import pytest

from pipeline.config.settings import build_config
from pipeline.errors import ConfigError
from pipeline.store.access import store_error
from pipeline.store.lease import LEASE_KEY, Conditional, LeaseLost, acquire, release, verify_lease
from pipeline.store.target import FsStore, LocalStore, open_store
from pipeline.store.uri import default_staging, parse_output, scrub


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("output", Path("output")),
        ("/data/out", Path("/data/out")),
        ("file:///data/out", Path("/data/out")),
        ("s3://my-bucket/a/b/", "s3://my-bucket/a/b"),
        ("S3://my-bucket", "s3://my-bucket"),
        ("gs://my-bucket/x", "gs://my-bucket/x"),
    ],
)
def test_output_uris_parse_to_a_folder_or_a_normalised_uri(given, parsed):
    assert parse_output(given) == parsed


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("ftp://host/x", "unknown scheme ftp://"),
        ("s3://", "the bucket is missing"),
        ("s3://UPPER/x", "not a valid bucket name"),
        ("s3://id:secretvalue@bucket/x", "credentials do not belong"),
        ("s3://bucket/x?versionId=1", "remove the ?query"),
        ("file://host/x", "file:///PATH"),
    ],
)
def test_a_bad_output_uri_is_one_line_that_never_echoes_credentials(given, says):
    with pytest.raises(ConfigError) as refused:
        parse_output(given)
    message = str(refused.value)
    assert says in message and "\n" not in message and "secretvalue" not in message


def test_a_plain_path_config_is_unchanged_and_staging_is_for_object_storage_only(tmp_path):
    config = build_config(rpc=["http://127.0.0.1:8545"], output=tmp_path)
    assert config.output == tmp_path and config.staging is None
    assert open_store(config.output) == LocalStore(tmp_path)
    remote = build_config(rpc=["http://127.0.0.1:8545"], output="s3://bkt-1/p", staging=tmp_path)
    store = open_store(remote.output, remote.staging)
    assert isinstance(store, FsStore) and (store.uri, store.staging) == ("s3://bkt-1/p", tmp_path)
    with pytest.raises(ConfigError, match="--staging is for an object-storage --output"):
        build_config(rpc=["http://127.0.0.1:8545"], output=tmp_path, staging=tmp_path)


def test_the_default_staging_folder_is_per_uri(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    a, b = default_staging("s3://bkt-1/a"), default_staging("s3://bkt-1/b")
    assert a != b and a.parent == b.parent and a.is_relative_to(tmp_path)


def test_credentials_of_the_environment_are_scrubbed():
    env = {"AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE"}
    assert scrub("denied for AKIAEXAMPLE with s3cr3t-value", env) == "denied for *** with ***"


class _ClientError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}}


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (_ClientError("404"), "bucket bkt-1 does not exist"),
        (_ClientError("NoSuchBucket"), "bucket bkt-1 does not exist"),
        (_ClientError("403"), "access denied"),
        (_ClientError("InvalidAccessKeyId"), "access denied"),
        (_ClientError("SignatureDoesNotMatch"), "access denied"),
        (OSError("When listing: AWS Error ACCESS_DENIED during ListObjectsV2"), "access denied"),
        (OSError("AWS Error NETWORK_CONNECTION during HeadBucket: curlCode: 7"), "cannot reach"),
        (
            type("NoCredentialsError", (Exception,), {})("Unable to locate credentials"),
            "no credentials found",
        ),
        (OSError("something else"), "cannot use the object store"),
    ],
)
def test_store_errors_are_classified_into_what_to_fix(error, says):
    message = store_error("s3://bkt-1/p", error)
    assert says in message and "\n" not in message, message


def test_a_pyarrow_filesystem_store_behaves_as_the_local_folder(tmp_path):
    remote = FsStore(f"file://{tmp_path / 'remote'}", tmp_path / "staging")
    local = LocalStore(tmp_path / "local")
    for store in (remote, local):
        store.write("logs/a.parquet", b"A")
        store.write("events/T/t.parquet", lambda path: path.write_bytes(b"T"))
        assert store.read("logs/a.parquet") == b"A" and store.read("nothing") is None
        assert store.names("logs") == ["a.parquet"] and store.folders("events") == ["T"]
        assert (
            store.exists("events/T/t.parquet")
            and store.location("logs/a.parquet").name == "a.parquet"
        )
        store.delete("logs/a.parquet")
        store.delete("logs/a.parquet")  # deleting what is gone is no error
        store.delete_tree("events")
        assert store.names("logs") == [] and store.folders("events") == []
    assert not list((tmp_path / "staging").glob("**/*.tmp"))  # uploads leave no local file


def test_the_lease_without_conditional_writes_refuses_a_second_run_and_takes_over_an_expired_one(
    tmp_path,
):
    store = FsStore(f"file://{tmp_path / 'remote'}", tmp_path / "staging")
    cond = Conditional(store)
    owner = acquire(cond, store.uri)
    with pytest.raises(ConfigError, match="another backfill"):
        acquire(cond, store.uri)
    verify_lease(FsStore(store.uri, store.staging, owner))
    with pytest.raises(LeaseLost):
        verify_lease(FsStore(store.uri, store.staging, "someone-else"))
    release(cond, owner)
    assert not store.exists(LEASE_KEY)
    expired = {"owner": "x", "host": "elsewhere", "pid": 1, "expires": time.time() - 1}
    store.write(LEASE_KEY, orjson.dumps(expired))
    taken = acquire(cond, store.uri)
    assert Conditional(store).read().owner == taken


def test_an_s3_store_carries_its_endpoint_to_child_processes_but_no_credential(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "never-pickled-secret")
    store = open_store("s3://bkt-1/p", tmp_path)
    assert (store.endpoint, store.region) == ("http://127.0.0.1:9000", "eu-west-1")
    assert store.fs.region == "eu-west-1"  # opened here; a child process opens its own
    shipped = pickle.dumps(store)
    assert b"never-pickled-secret" not in shipped and b"_opened" not in shipped
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # a child started before it was set
    options = pickle.loads(shipped).fs.__reduce__()[1][0]  # pyarrow shows no other way
    assert (options["endpoint_override"], options["scheme"]) == ("127.0.0.1:9000", "http")
