"""Where a run's final files, manifest and summary live: a local folder or an object store,
behind one small interface (write a file whole, read, list, delete).

Keys are relative, `/`-separated: "manifest.json", "logs/logs__…parquet". The local store is
the folder the tool always wrote to (temporary name, fsync, rename: store.atomic); an object
store is reached through pyarrow's filesystems, and each file is written locally then uploaded
whole. Staging (fragments, incoming results, crash logs) is always a local folder: `staging`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from pipeline.store.atomic import atomic_path, atomic_upload, write_atomically
from pipeline.store.layout import STAGING_DIR
from pipeline.store.lease import Conditional, verify_lease
from pipeline.store.uri import default_staging, is_remote


class Store(Protocol):
    """Final files of one output, by key; `staging` is the local folder of its fragments."""

    uri: str
    staging: Path

    @property
    def remote(self) -> bool: ...
    def atomic(self, key: str) -> contextlib.AbstractContextManager[Path]: ...
    def write(self, key: str, data: bytes | Callable[[Path], object]) -> None: ...
    def read(self, key: str) -> bytes | None: ...
    def names(self, folder: str) -> list[str]: ...
    def folders(self, folder: str) -> list[str]: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def delete_tree(self, folder: str) -> None: ...
    def location(self, key: str) -> Path | PurePosixPath: ...
    def shown(self, key: str) -> str: ...
    def fence(self) -> None: ...


@dataclass(frozen=True)
class LocalStore:
    """A local output folder: final files and staging side by side, as the tool always did."""

    root: Path

    @property
    def uri(self) -> str:
        """The folder, as messages show it."""
        return str(self.root)

    @property
    def staging(self) -> Path:
        """The folder itself holds the staging (OUT/.staging)."""
        return self.root

    @property
    def remote(self) -> bool:
        """Local."""
        return False

    def atomic(self, key: str) -> contextlib.AbstractContextManager[Path]:
        """A temporary path to write; it becomes `key` whole and durably on success."""
        (self.root / key).parent.mkdir(parents=True, exist_ok=True)
        return atomic_path(self.root / key)

    def write(self, key: str, data: bytes | Callable[[Path], object]) -> None:
        """Write `data` (bytes, or a function that writes the path it is given) as `key`."""
        (self.root / key).parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.root / key, data)

    def read(self, key: str) -> bytes | None:
        """The file's bytes, or None if there is none."""
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def names(self, folder: str) -> list[str]:
        """Names of the files directly in `folder` (none if it does not exist), sorted."""
        path = self.root / folder
        return sorted(p.name for p in path.iterdir() if not p.is_dir()) if path.is_dir() else []

    def folders(self, folder: str) -> list[str]:
        """Names of the folders directly in `folder`, sorted."""
        path = self.root / folder
        return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []

    def exists(self, key: str) -> bool:
        """Whether `key` exists."""
        return (self.root / key).exists()

    def delete(self, key: str) -> None:
        """Delete `key` if it exists."""
        (self.root / key).unlink(missing_ok=True)

    def delete_tree(self, folder: str) -> None:
        """Delete `folder` and everything in it, if it exists."""
        shutil.rmtree(self.root / folder, ignore_errors=True)

    def location(self, key: str) -> Path:
        """The path of `key`."""
        return self.root / key

    def shown(self, key: str) -> str:
        """`key` as messages show it."""
        return str(self.root / key)

    def fence(self) -> None:
        """Nothing to check: the folder lock (store.locks) keeps other runs out."""


@dataclass(frozen=True)
class FsStore:
    """An object-storage prefix reached through pyarrow's filesystems (S3, GCS, HDFS, Azure).

    `owner` is the run id holding its lease (store.lease) once taken: every upload checks
    that the lease is still this run's (`fence`)."""

    uri: str  # scheme://bucket/prefix, normalised by store.uri.parse_output
    staging: Path
    owner: str = ""
    # S3's endpoint and region as the starting process's environment gave them (no secret):
    # child processes use these, whatever environment they were started from.
    endpoint: str = ""
    region: str = ""

    @property
    def remote(self) -> bool:
        """Object storage."""
        return True

    @functools.cached_property
    def _opened(self) -> tuple[pafs.FileSystem, str]:
        return open_filesystem(self.uri, self.endpoint, self.region)

    @property
    def fs(self) -> pafs.FileSystem:
        """The pyarrow filesystem (opened once per process)."""
        return self._opened[0]

    def path(self, key: str = "") -> str:
        """The filesystem path of `key` (bucket/prefix/key)."""
        base = self._opened[1].rstrip("/")
        return f"{base}/{key}" if key else base

    def atomic(self, key: str) -> contextlib.AbstractContextManager[Path]:
        """A local temporary path to write; it is uploaded as `key` whole on success."""
        path = self.path(key)
        if not self.uri.startswith("s3://"):
            # Filesystems with real folders (HDFS, Azure's, file://) need the parent; on S3
            # this would only add a marker object.
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        # Once the lease is taken, every upload first checks it is still this run's: a run that
        # lost it publishes nothing more (no final file, manifest or summary).
        return atomic_upload(self.fs, path, self.staging / STAGING_DIR, self.fence)

    def write(self, key: str, data: bytes | Callable[[Path], object]) -> None:
        """Write `data` (bytes, or a function that writes the path it is given) as `key`."""
        with self.atomic(key) as tmp:
            if isinstance(data, bytes):
                tmp.write_bytes(data)
            else:
                data(tmp)

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is none."""
        try:
            with self.fs.open_input_stream(self.path(key)) as source:
                return source.read()
        except FileNotFoundError:
            return None

    def _infos(self, folder: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(self.path(folder), allow_not_found=True)
        return self.fs.get_file_info(selector)

    def names(self, folder: str) -> list[str]:
        """Names of the objects directly under `folder/`, sorted."""
        return sorted(i.base_name for i in self._infos(folder) if i.type == pafs.FileType.File)

    def folders(self, folder: str) -> list[str]:
        """Names of the "folders" (common prefixes) directly under `folder/`, sorted."""
        found = self._infos(folder)
        return sorted(i.base_name for i in found if i.type == pafs.FileType.Directory)

    def exists(self, key: str) -> bool:
        """Whether object `key` exists."""
        return self.fs.get_file_info(self.path(key)).type == pafs.FileType.File

    def delete(self, key: str) -> None:
        """Delete object `key` if it exists."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path(key))

    def delete_tree(self, folder: str) -> None:
        """Delete every object under `folder/`."""
        self.fs.delete_dir_contents(self.path(folder), missing_dir_ok=True)

    def location(self, key: str) -> PurePosixPath:
        """`key` as a path (its `.name` is the object's name)."""
        return PurePosixPath(key)

    def shown(self, key: str) -> str:
        """`key` as messages show it: its URI."""
        return f"{self.uri}/{key}"

    @functools.cached_property
    def _lease(self) -> Conditional:
        return Conditional(self)  # one client per process, not one per upload

    def fence(self) -> None:
        """Before an upload: raise LeaseLost unless this run still holds the prefix's lease."""
        if self.owner:
            verify_lease(self, self._lease)

    def __getstate__(self) -> dict:
        # The filesystem and the client are opened again in each process, from the
        # environment's credentials.
        return {k: v for k, v in self.__dict__.items() if k not in ("_opened", "_lease")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def open_store(output: Path | str, staging: Path | None = None) -> LocalStore | FsStore:
    """The store --output names (parsed by store.uri.parse_output); object storage stages in
    `staging`, by default a folder of the user's cache named after the URI."""
    if not is_remote(output):
        return LocalStore(Path(output))
    uri = str(output)
    endpoint, region = s3_settings() if uri.startswith("s3://") else ("", "")
    return FsStore(uri, Path(staging) if staging else default_staging(uri), "", endpoint, region)


def s3_settings() -> tuple[str, str]:
    """S3's endpoint and region from the standard AWS environment ("" when unset)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
    return endpoint, region


def as_store(out: Path | Store) -> Store:
    """A store for functions that also accept a plain folder (the library's earlier callers)."""
    return LocalStore(out) if isinstance(out, Path) else out


def open_filesystem(uri: str, endpoint: str = "", region: str = "") -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for `uri` and the path in it. Credentials come from the standard
    environment and configuration of each cloud (never from the URI); for S3, the endpoint
    (AWS_ENDPOINT_URL, see s3_settings) is passed on explicitly: older pyarrow versions ignore
    the variable, and a child process may have been started before it was set."""
    if not uri.startswith("s3://"):
        return pafs.FileSystem.from_uri(uri)
    path = uri.removeprefix("s3://")
    options: dict = {}
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update(endpoint_override=parts.netloc, scheme=parts.scheme)
    if not region and not endpoint:
        region = pafs.resolve_s3_region(path.split("/", 1)[0])
    return pafs.S3FileSystem(region=region or "us-east-1", **options), path
