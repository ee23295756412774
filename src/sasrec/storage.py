"""Object storage (gs://, s3://) and local paths behind one small API, through fsspec.

gcsfs and s3fs find credentials the usual way: Application Default Credentials or
Workload Identity for gs://; `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (or an IAM role)
and `AWS_ENDPOINT_URL` (MinIO, any S3-compatible store) for s3://.
"""

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sasrec.errors import SASRecError
from sasrec.io import atomic_path

OBJECT_STORE_SCHEMES = ("gs://", "s3://")


def is_object_store(uri: str | Path) -> bool:
    """Whether `uri` names a gs:// or s3:// location rather than a local path."""
    return str(uri).startswith(OBJECT_STORE_SCHEMES)


def join(base: str | Path, *parts: str) -> str | Path:
    """`base/part/...`: a URI stays a string, a local path stays a Path."""
    if is_object_store(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return Path(base).joinpath(*parts)


def _object_store(uri: str | Path) -> tuple[Any, str]:
    """The fsspec filesystem of a gs:// or s3:// URI (gcsfs, s3fs) and the path in it."""
    import fsspec

    return fsspec.core.url_to_fs(str(uri))


@contextlib.contextmanager
def _explained(uri: str | Path, action: str) -> Iterator[None]:
    """Turn an object store's refusal into one line that names the URI and what to check."""
    try:
        yield
    except (OSError, ValueError) as err:
        raise SASRecError(
            f"cannot {action} {uri}: {err}; check that the bucket exists and the credentials "
            "(AWS_* variables or the storage secret for s3://, the service account for gs://)"
        ) from err


def write_bytes(data: bytes, uri: str | Path) -> None:
    """Write `data` to `uri` whole: an object upload, or a local file renamed into place.

    Raises:
        SASRecError: when the object store refuses (no bucket, no permission).
    """
    if is_object_store(uri):
        fs, path = _object_store(uri)
        with _explained(uri, "write"):
            fs.pipe_file(path, data)  # one PUT: readers see the old object or the new one
        return
    with atomic_path(uri) as tmp:
        tmp.write_bytes(data)


def exists(uri: str | Path) -> bool:
    """Whether a file (an object) is at `uri`."""
    if is_object_store(uri):
        fs, path = _object_store(uri)
        with _explained(uri, "read"):
            return fs.isfile(path)
    return Path(uri).is_file()


def read_bytes(uri: str | Path) -> bytes | None:
    """The content at `uri`, or None when nothing is there."""
    if is_object_store(uri):
        fs, path = _object_store(uri)
        try:
            return fs.cat_file(path)
        except FileNotFoundError:
            return None
    path = Path(uri)
    return path.read_bytes() if path.is_file() else None


def remove(uri: str | Path) -> None:
    """Delete a file or a folder (a prefix of objects) with all it holds; none is fine."""
    if is_object_store(uri):
        fs, path = _object_store(uri)
        with _explained(uri, "delete"):
            if fs.exists(path):
                fs.rm(path, recursive=True)
        return
    path = Path(uri)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def login(uri: str) -> str:
    """The `user:password` part of a URI's authority, or "" when it has none."""
    return urlsplit(uri).netloc.rpartition("@")[0]


def redact(uri: str) -> str:
    """`uri` without the `user:password@` part of its authority, for logs and records.

    What remains still names the server; credentials then come from the environment.
    """
    parts = urlsplit(uri)
    if not parts.scheme or not login(uri):
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
