"""Atomic writes: every output appears complete under its final name, or not at all.

Files are written under a temporary name and renamed into place. Directories are never
renamed: object-store filesystems (Cloud Storage FUSE on Vertex AI, s3fs mounts) refuse or
fake directory renames. A directory is staged in a hidden folder inside it, its files are
renamed into place one by one, and a `_SUCCESS` marker, written last, says it is complete.
"""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sasrec.errors import SASRecError

COMPLETE_MARKER = "_SUCCESS"  # the Hadoop/Spark convention for "this folder is whole"
_STAGING_PREFIX = ".staging-"


@contextlib.contextmanager
def atomic_path(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside `final_path`; rename it into place on success.

    On any exception the temporary file is removed and whatever was at `final_path` before
    stays untouched. For directories use `atomic_dir`.

    Args:
        final_path: Where the finished file must end up.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{final_path.name}.", dir=final_path.parent)
    os.close(handle)
    tmp_path = Path(name)
    tmp_path.unlink()
    try:
        yield tmp_path
        os.replace(tmp_path, final_path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(final_dir: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory; on success its files replace `final_dir`'s content.

    The staging directory lies inside `final_dir`, so only files are renamed. `final_dir`
    loses its `_SUCCESS` marker before the first file moves in and gets it back after the
    last, and files of an earlier content that the new one lacks are removed. On any
    exception the staging directory is removed and `final_dir` keeps what it had (a folder
    made for this write is removed again).

    Args:
        final_dir: The directory to fill.
    """
    final_dir = Path(final_dir)
    created = not final_dir.exists()
    final_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=final_dir))
    try:
        yield staging
        (final_dir / COMPLETE_MARKER).unlink(missing_ok=True)
        new_files = {path.relative_to(staging) for path in staging.rglob("*") if path.is_file()}
        for old in [path for path in final_dir.iterdir() if path != staging]:
            if old.is_file() and old.relative_to(final_dir) not in new_files:
                old.unlink()
        for relative in sorted(new_files):
            (final_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / relative, final_dir / relative)
        (final_dir / COMPLETE_MARKER).touch()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(final_dir.iterdir()):
            final_dir.rmdir()


def require_complete(directory: str | Path, what: str) -> Path:
    """`directory`, checked to be a whole output of a step (it holds `_SUCCESS`).

    Raises:
        SASRecError: when it is missing, not a directory, or was left half-written.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise SASRecError(f"{directory} is not a directory; give the output of {what}")
    if not (directory / COMPLETE_MARKER).is_file():
        raise SASRecError(
            f"{directory} is incomplete (no {COMPLETE_MARKER}): the {what} that wrote it was "
            "interrupted or it is not such an output; run that step again"
        )
    return directory


def write_json(data: Any, path: str | Path) -> None:
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())
