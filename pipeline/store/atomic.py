"""The one way this tool writes a file: whole or not at all, and durable once renamed.

Readers (and a later run) either see a file complete under its final name or not at all: it is
written under a hidden temporary name, fsynced, renamed over the final name, and its folder is
fsynced so the rename itself survives a power cut.

Object stores have no rename, but an object appears whole or not at all once its upload
completes (a single PUT, or a multipart upload's completion): a file is written locally first,
then uploaded under its final key in one write (atomic_upload).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.store.layout import temp_path


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes `final` durably, on any error it
    is deleted and `final` is untouched."""
    tmp = temp_path(final)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, final)
        fsync_path(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomically(final: Path, data: bytes | Callable[[Path], object]) -> Path:
    """Write `data` (bytes, or a function that writes the path it is given) as `final`."""
    with atomic_path(final) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            data(tmp)
    return final


def publish(written: Path, final: Path) -> Path:
    """Make an already written file `final` durably (its data first, then the rename)."""
    fsync_path(written)
    os.replace(written, final)
    fsync_path(final.parent)
    return final


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_upload(
    fs: pafs.FileSystem, dest: str, scratch: Path, check: Callable[[], None] | None = None
) -> Iterator[Path]:
    """Yield a local path (in `scratch`) to write; on success it becomes object `dest` of `fs`
    in one upload (`check`, if given, runs just before and may refuse it by raising), on any
    error nothing is uploaded. The local file is deleted either way."""
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(scratch / dest.rsplit("/", 1)[-1])
    try:
        yield tmp
        if check is not None:
            check()
        upload(fs, tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def upload(fs: pafs.FileSystem, source: Path, dest: str) -> None:
    """Upload a complete local file as object `dest`. It is handed to the stream in one write
    (memory-mapped, not copied): the stream never holds part of it when it closes, and an
    object store publishes the object only when the upload completes."""
    size = source.stat().st_size
    with fs.open_output_stream(dest) as sink:
        if size:
            with pa.memory_map(str(source)) as mapped:
                sink.write(mapped.read_buffer())
