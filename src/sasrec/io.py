"""Atomic writes: every output appears complete under its final name, or not at all."""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final_path`; rename it into place on success.

    Works for files and directories. On any exception the temporary path is removed and
    whatever was at `final_path` before stays untouched.

    Args:
        final_path: Where the finished file or directory must end up.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{final_path.name}.", dir=final_path.parent))
    shutil.rmtree(tmp_path)
    try:
        yield tmp_path
        if final_path.is_dir():
            shutil.rmtree(final_path)
        os.replace(tmp_path, final_path)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()


def write_json(data: Any, path: str | Path) -> None:
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())
