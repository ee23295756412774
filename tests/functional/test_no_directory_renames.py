"""Every step on a filesystem that refuses directory renames, as Cloud Storage FUSE (Vertex AI
Pipelines' artifact paths) does: a `sitecustomize` makes os.rename and os.replace of a
directory fail with ENOTSUP in the step processes, as that filesystem's rename call does."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cyclic_reviews, write_reviews_jsonl_gz
from sasrec.io import COMPLETE_MARKER

pytestmark = pytest.mark.slow

REFUSE_DIRECTORY_RENAMES = """
import errno, os

def _files_only(rename):
    def checked(src, dst, *args, **kwargs):
        if os.path.isdir(src):
            raise OSError(errno.ENOTSUP, "directory rename not supported", src)
        return rename(src, dst, *args, **kwargs)
    return checked

os.rename, os.replace = _files_only(os.rename), _files_only(os.replace)
"""


@pytest.fixture
def no_dir_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(REFUSE_DIRECTORY_RENAMES)
    monkeypatch.setenv("PYTHONPATH", str(shim))
    return shim


def sasrec(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sasrec.cli", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_the_shim_refuses_directory_renames(no_dir_renames, tmp_path):
    (tmp_path / "a").mkdir()
    script = "import os; os.replace('a', 'b')"
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True)
    assert result.returncode != 0 and b"directory rename not supported" in result.stderr


def test_every_step_writes_its_outputs_without_renaming_a_directory(
    no_dir_renames, tmp_path, mlflow_uri
):
    source = write_reviews_jsonl_gz(tmp_path / "r.jsonl.gz", cyclic_reviews())
    hparams = json.dumps({"max_epochs": 2, "hidden_size": 16})
    steps = [
        ("download", "--source", str(source), "--out", "raw", "--cache-dir", "cache"),
        ("sequences", "--interactions", "raw/interactions.parquet", "--out", "seq", "--kcore", "0"),
        ("train", "--sequences", "seq", "--out", "model", "--hparams", hparams),
        ("evaluate", "--model", "model", "--sequences", "seq", "--out", "evaluation"),
        ("recommend", "--model", "model", "--sequences", "seq", "--out", "recommendations"),
    ]
    for args in steps:
        result = sasrec(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
    for folder in ("seq", "model", "evaluation"):
        assert (tmp_path / folder / COMPLETE_MARKER).is_file(), folder
        assert not [p for p in (tmp_path / folder).iterdir() if p.name.startswith(".")]
    assert (tmp_path / "recommendations" / "recommendations.parquet").is_file()

    # A folder whose writer was cut off has no marker, and the next step refuses it.
    (tmp_path / "seq" / COMPLETE_MARKER).unlink()
    result = sasrec("train", "--sequences", "seq", "--out", "model2", cwd=tmp_path)
    assert result.returncode == 2
    assert "seq is incomplete (no _SUCCESS)" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "model2").exists()
