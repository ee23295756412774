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

from sasrec.errors import SASRecError, ServiceUnavailable, one_line, without_logins
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


def _unreachable(err: BaseException) -> bool:
    """Whether `err` says the store did not answer (a rerun may succeed), not that it refused."""
    name = type(err).__name__
    return isinstance(err, ConnectionError | TimeoutError) or any(
        word in name for word in ("Connect", "Timeout", "Endpoint")
    )


@contextlib.contextmanager
def explained(uri: str | Path, action: str, missing_ok: bool = False) -> Iterator[None]:
    """Turn an object store's failure into one line that names the URI and what to check.

    botocore, gcsfs and aiohttp raise errors of their own types: all become one line. With
    `missing_ok`, a missing object (FileNotFoundError) passes through for the caller.

    Raises:
        ServiceUnavailable: when the store did not answer.
        SASRecError: when it refused (no bucket, no permission, bad credentials).
    """
    try:
        yield
    except SASRecError:
        raise
    except FileNotFoundError:
        if missing_ok:
            raise
        raise SASRecError(
            f"cannot {action} {without_logins(str(uri))}: no such bucket or object; check that "
            "the bucket exists and the credentials (AWS_* variables or the storage secret "
            "for s3://, the service account for gs://)"
        ) from None
    except Exception as err:  # every client library has its own error types
        where = without_logins(str(uri))
        if _unreachable(err):
            raise ServiceUnavailable(
                f"cannot {action} {where}: the object store did not answer ({one_line(err)}); "
                "check AWS_ENDPOINT_URL (s3://) or the network, then rerun"
            ) from err
        raise SASRecError(
            f"cannot {action} {where}: {one_line(err)}; check that the bucket exists and the "
            "credentials (AWS_* variables or the storage secret for s3://, the service "
            "account for gs://)"
        ) from err


def write_bytes(data: bytes, uri: str | Path) -> None:
    """Write `data` to `uri` whole: an object upload, or a local file renamed into place.

    Raises:
        SASRecError: when the object store refuses (no bucket, no permission).
    """
    if is_object_store(uri):
        fs, path = _object_store(uri)
        with explained(uri, "write"):
            fs.pipe_file(path, data)  # one PUT: readers see the old object or the new one
        return
    with atomic_path(uri) as tmp:
        tmp.write_bytes(data)


def exists(uri: str | Path) -> bool:
    """Whether a file (an object) is at `uri`."""
    if is_object_store(uri):
        fs, path = _object_store(uri)
        with explained(uri, "read"):
            return fs.isfile(path)
    return Path(uri).is_file()


def read_bytes(uri: str | Path) -> bytes | None:
    """The content at `uri`, or None when nothing is there."""
    if is_object_store(uri):
        fs, path = _object_store(uri)
        try:
            with explained(uri, "read", missing_ok=True):
                return fs.cat_file(path)
        except FileNotFoundError:
            return None
    path = Path(uri)
    return path.read_bytes() if path.is_file() else None


def remove_file(uri: str | Path) -> None:
    """Delete the one file (object) at `uri`; none is fine. Never a folder or a prefix.

    A run deletes only what it wrote, by name: a folder it shares with other runs, or a
    prefix in a shared bucket, keeps everything else in it.
    """
    if is_object_store(uri):
        fs, path = _object_store(uri)
        with explained(uri, "delete"):
            if fs.isfile(path):
                fs.rm_file(path)
        return
    Path(uri).unlink(missing_ok=True)


def remove_empty_dir(uri: str | Path) -> None:
    """Remove the local folder `uri` if nothing is left in it (object stores have no folders)."""
    if is_object_store(uri):
        return
    with contextlib.suppress(FileNotFoundError, OSError):
        Path(uri).rmdir()  # refuses a folder that still holds anything


def put_dir(local_dir: str | Path, uri: str | Path) -> list[str]:
    """Copy every file under `local_dir` to `uri` (a folder or an object prefix), by name.

    Returns:
        The files' paths relative to `local_dir`: what a caller may later remove, by name.
    """
    local_dir = Path(local_dir)
    relative = sorted(str(p.relative_to(local_dir)) for p in local_dir.rglob("*") if p.is_file())
    for name in relative:
        if is_object_store(uri):
            fs, path = _object_store(join(uri, name))
            with explained(uri, "write"):
                fs.put_file(str(local_dir / name), path)
        else:
            target = Path(uri) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                shutil.copyfile(local_dir / name, tmp)
    return relative


def get_dir(uri: str | Path, local_dir: str | Path) -> list[str]:
    """Copy every file under `uri` (a folder or an object prefix) into `local_dir`.

    Returns:
        The files' paths relative to `uri`.

    Raises:
        SASRecError: when nothing is there, or the store refuses.
    """
    local_dir = Path(local_dir)
    if is_object_store(uri):
        fs, root = _object_store(uri)
        with explained(uri, "read"):
            remote = fs.find(root)
        relative = sorted(path[len(root.rstrip("/")) + 1 :] for path in remote)
    else:
        files = Path(uri).rglob("*") if Path(uri).is_dir() else []
        relative = sorted(str(p.relative_to(uri)) for p in files if p.is_file())
    if not relative:
        raise SASRecError(f"nothing to read at {uri}")
    for name in relative:
        (local_dir / name).parent.mkdir(parents=True, exist_ok=True)
        if is_object_store(uri):
            fs, path = _object_store(join(uri, name))
            with explained(uri, "read"):
                fs.get_file(path, str(local_dir / name))
        else:
            shutil.copyfile(Path(uri) / name, local_dir / name)
    return relative


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
