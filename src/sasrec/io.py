"""Atomic writes: every output appears complete under its final name, or not at all.

Files are written under a temporary name and renamed into place. Directories are never
renamed: object-store filesystems (Cloud Storage FUSE on Vertex AI, s3fs mounts) refuse or
fake directory renames. A directory is staged in a hidden folder inside it, its files are
renamed into place one by one, and a `_SUCCESS` marker, written last, says it is complete.
A `_SASREC_STEP` file names the step that owns the directory: a step never replaces the
files of a folder it does not own, and never reads another step's output as its input.
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
STEP_FILE = "_SASREC_STEP"  # the `sasrec` subcommand whose output the directory is
_STAGING_PREFIX = ".staging-"


def _make_dirs(directory: Path) -> None:
    """`mkdir -p`, with a one-line error when a part of the path is a file."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise SASRecError(
            f"cannot create the directory {directory}: {err.filename} is a file; "
            "give a directory path"
        ) from err


def _owner(directory: Path) -> str | None:
    """The step that wrote `directory` (None: not written by a step of this version)."""
    step_file = directory / STEP_FILE
    return step_file.read_text().strip() if step_file.is_file() else None


def require_dir_path(directory: str | Path) -> Path:
    """`directory`, checked to be a directory or a path where one can be made.

    Raises:
        SASRecError: when it, or a folder above it, is a file.
    """
    directory = Path(directory)
    for path in (directory, *directory.parents):
        if path.exists() and not path.is_dir():
            raise SASRecError(
                f"output {directory}: {path} is a file, not a directory; give a directory path"
            )
    return directory


def require_output_dir(directory: str | Path, step: str) -> Path:
    """`directory`, checked to be a place where `sasrec <step>` may write its output.

    It may not exist yet, be empty, or hold an earlier output of the same step (which
    is replaced); anything else is refused before any work is done, so that no file of
    the user's is ever replaced.

    Raises:
        SASRecError: when it, or a folder above it, is a file, or it holds other files.
    """
    directory = require_dir_path(directory)
    if not directory.exists():
        return directory
    content = [p for p in directory.iterdir() if not p.name.startswith(_STAGING_PREFIX)]
    owner = _owner(directory)
    legacy_output = owner is None and (directory / COMPLETE_MARKER).is_file()
    if content and owner != step and not legacy_output:
        what = f"the output of `sasrec {owner}`" if owner else "files of its own"
        raise SASRecError(
            f"output {directory} already holds {what} ({len(content)} entries), which "
            f"`sasrec {step}` would replace; give a new or empty directory"
        )
    return directory


@contextlib.contextmanager
def atomic_path(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside `final_path`; rename it into place on success.

    On any exception the temporary file is removed and whatever was at `final_path` before
    stays untouched. For directories use `atomic_dir`.

    Args:
        final_path: Where the finished file must end up.
    """
    final_path = Path(final_path)
    if final_path.is_dir():
        raise SASRecError(f"output {final_path} is a directory; give a file path")
    _make_dirs(final_path.parent)
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
def atomic_dir(final_dir: str | Path, step: str) -> Iterator[Path]:
    """Yield an empty staging directory; on success its files replace `final_dir`'s content.

    The staging directory lies inside `final_dir`, so only files are renamed. `final_dir`
    loses its `_SUCCESS` marker before the first file moves in and gets it back after the
    last, and files of an earlier content that the new one lacks are removed. On any
    exception the staging directory is removed and `final_dir` keeps what it had (a folder
    made for this write is removed again).

    Args:
        final_dir: The directory to fill: new, empty, or an earlier output of `step`.
        step: The `sasrec` subcommand whose output this is, recorded in `_SASREC_STEP`.

    Raises:
        SASRecError: when `final_dir` may not be written (see `require_output_dir`).
    """
    final_dir = require_output_dir(final_dir, step)
    created = not final_dir.exists()
    _make_dirs(final_dir)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=final_dir))
    try:
        yield staging
        new_files = {path.relative_to(staging) for path in staging.rglob("*") if path.is_file()}
        new_files.discard(Path(STEP_FILE))  # a copied output brings its own
        # The owner first: a write killed half-way leaves a folder that a rerun may replace.
        (staging / STEP_FILE).write_text(step + "\n")
        os.replace(staging / STEP_FILE, final_dir / STEP_FILE)
        (final_dir / COMPLETE_MARKER).unlink(missing_ok=True)
        kept = new_files | {Path(STEP_FILE)}
        for old in [path for path in final_dir.iterdir() if path != staging]:
            if old.is_file() and old.relative_to(final_dir) not in kept:
                old.unlink()
        for relative in sorted(new_files):
            (final_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / relative, final_dir / relative)
        (final_dir / COMPLETE_MARKER).touch()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(final_dir.iterdir()):
            final_dir.rmdir()


def require_complete(directory: str | Path, step: str) -> Path:
    """`directory`, checked to be a whole output of `sasrec <step>` (it holds `_SUCCESS`).

    Raises:
        SASRecError: when it is missing, not a directory, another step's output, or was
            left half-written.
    """
    directory = Path(directory)
    what = f"`sasrec {step}`"
    if not directory.is_dir():
        raise SASRecError(f"{directory} is not a directory; give the output of {what}")
    owner = _owner(directory)
    if owner not in (None, step):
        raise SASRecError(
            f"{directory} is the output of `sasrec {owner}`, not of {what}; give the output "
            f"of {what}"
        )
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
