"""What --output names: a local folder (a plain path or file://) or an object-storage URI
(s3://bucket/prefix, gs://bucket/prefix, ...), and where an object-storage run stages locally.

Only the syntax is checked here (no network): build_config calls `parse_output`; reaching the
bucket is checked by store.access before anything runs.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline.errors import ConfigError

# Schemes pyarrow's filesystems open (FileSystem.from_uri); file:// is a local folder.
REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# Bucket names of S3 and GCS: lower-case letters, digits, dots, dashes, underscores (GCS).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
# Secrets some clients print in messages; scrubbed wherever an error of the store is shown.
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")


def parse_output(value: str | Path) -> Path | str:
    """A plain path (or file:// URI) as a Path, an object-storage URI as a normalised string
    `scheme://bucket/prefix`; a ConfigError (one line) for anything else."""
    if isinstance(value, Path):
        return value
    text = str(value)
    match = _SCHEME.match(text)
    if not match:
        return Path(text)
    scheme = match[1].lower()
    parts = urlsplit(text)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"--output {text}: a file:// URI names a local folder (file:///PATH)")
        return Path(unquote(parts.path))
    if scheme not in REMOTE_SCHEMES:
        known = ", ".join(f"{s}://" for s in ("s3", "gs", "file"))
        raise ConfigError(
            f"--output {_shown(text)}: unknown scheme {scheme}:// (use {known} or a plain path)"
        )
    if "@" in parts.netloc:
        raise ConfigError(
            f"--output {scheme}://…: credentials do not belong in the URI; set them in the "
            "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or a profile"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"--output {_shown(text)}: remove the ?query/#fragment from the URI")
    bucket = parts.netloc
    if not bucket:
        raise ConfigError(f"--output {text}: the bucket is missing ({scheme}://BUCKET/PREFIX)")
    if scheme in ("s3", "gs", "gcs") and not _BUCKET.match(bucket):
        raise ConfigError(
            f"--output {text}: {bucket!r} is not a valid bucket name (3-63 lower-case letters, "
            "digits, dots and dashes)"
        )
    prefix = "/".join(p for p in parts.path.split("/") if p)
    return f"{scheme}://{bucket}/{prefix}" if prefix else f"{scheme}://{bucket}"


def is_remote(output: Path | str) -> bool:
    """Whether --output names object storage rather than a local folder."""
    return isinstance(output, str)


def default_staging(uri: str) -> Path:
    """Where a run into `uri` stages by default: a folder of the user's cache named after the
    URI, so that runs into the same URI on this machine share (and resume from) it."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", uri.split("://", 1)[1])[:80]
    digest = hashlib.sha256(uri.encode()).hexdigest()[:10]
    return cache / "pipeline-backfill" / "staging" / f"{slug}-{digest}"


def scrub(text: str, environ: dict[str, str] | None = None) -> str:
    """`text` with any credential from the environment replaced by ***."""
    environ = os.environ if environ is None else environ
    for name in SECRET_VARIABLES:
        secret = environ.get(name, "")
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _shown(text: str) -> str:
    """A URI as messages show it: the part before any user info or query is enough."""
    parts = urlsplit(text)
    host = parts.netloc.rsplit("@", 1)[-1]
    return f"{parts.scheme}://{host}{parts.path}"
