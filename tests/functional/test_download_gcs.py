"""gs:// sources through gcsfs, against the gcp-storage-emulator on 127.0.0.1."""

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import polars as pl
import pytest
import requests
from gcp_storage_emulator.server import create_server

BUCKET = "reviews"


@pytest.fixture
def gcs_emulator() -> Iterator[str]:
    """A GCS emulator on a free local port with an empty bucket; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def upload(emulator: str, name: str, data: bytes) -> None:
    response = requests.post(
        f"{emulator}/upload/storage/v1/b/{BUCKET}/o",
        params={"uploadType": "media", "name": name},
        data=data,
        timeout=30,
    )
    response.raise_for_status()


def download_cli(emulator: str, source: str, tmp_path) -> subprocess.CompletedProcess:
    # The emulator does not serve the storage-layout API that gcsfs probes by default.
    env = os.environ | {
        "STORAGE_EMULATOR_HOST": emulator,
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }
    command = [sys.executable, "-m", "sasrec.cli", "download", "--source", source]
    command += ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_gs_source_is_downloaded_and_converted(gcs_emulator, reviews_gz, tmp_path):
    sample = reviews_gz
    upload(gcs_emulator, "raw/Video_Games.jsonl.gz", sample.read_bytes())
    result = download_cli(gcs_emulator, f"gs://{BUCKET}/raw/Video_Games.jsonl.gz", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    downloaded = pl.read_parquet(tmp_path / "out" / "interactions.parquet")
    expected = pl.read_ndjson(sample).select("user_id", pl.col("parent_asin").alias("item_id"))
    assert downloaded.select("user_id", "item_id").equals(expected)


def test_missing_gs_object_is_a_clear_error(gcs_emulator, tmp_path):
    result = download_cli(gcs_emulator, f"gs://{BUCKET}/nope.jsonl.gz", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"sasrec download: error: download of gs://{BUCKET}/nope.jsonl.gz failed: "
        "no such object; check the URL"
    )
    assert not (tmp_path / "out").exists()
