"""Downloads over real HTTP on 127.0.0.1."""

import shutil
import subprocess
import sys

import polars as pl
import pytest

from sasrec.data.download import download_interactions
from sasrec.errors import SASRecError


def test_amazon_category_from_a_mirror_is_downloaded_once(http_server, amazon_sample_gz, tmp_path):
    base_url, root, requests_seen = http_server
    mirror = root / "raw" / "review_categories"
    mirror.mkdir(parents=True)
    shutil.copy(amazon_sample_gz, mirror / "Video_Games.jsonl.gz")
    cache = tmp_path / "cache"
    for attempt in (1, 2):
        counts = download_interactions(
            "amazon2023:Video_Games", tmp_path / f"out{attempt}.parquet", base_url, cache
        )
        assert counts == {"num_interactions": 1000, "num_lines": 1000, "num_malformed_lines": 0}
    assert requests_seen == ["/raw/review_categories/Video_Games.jsonl.gz"]  # 2nd run: cache
    first, second = (pl.read_parquet(tmp_path / f"out{n}.parquet") for n in (1, 2))
    assert first.equals(second)


def test_http_404_is_a_clear_error_and_leaves_nothing(http_server, tmp_path):
    base_url, _, _ = http_server
    with pytest.raises(SASRecError, match=r"Video_Games\.jsonl\.gz failed: HTTP 404"):
        download_interactions(
            "amazon2023:Video_Games", tmp_path / "out.parquet", base_url, tmp_path / "cache"
        )
    assert not (tmp_path / "out.parquet").exists()
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


PASSWORD = "source-pw-SECRET-4"  # the password of a URL with a login


def test_credentials_in_a_source_url_stay_out_of_logs_and_errors(http_server, reviews_gz, tmp_path):
    base_url, root, _ = http_server
    shutil.copy(reviews_gz, root / "reviews.jsonl.gz")
    with_login = base_url.replace("http://", f"http://bob:{PASSWORD}@")
    for name, expected_code in (("reviews.jsonl.gz", 0), ("missing.jsonl.gz", 2)):
        result = subprocess.run(
            [sys.executable, "-m", "sasrec.cli", "-v", "download", "--source",
             f"{with_login}/{name}", "--out", str(tmp_path / name), "--cache-dir",
             str(tmp_path / "cache")],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == expected_code, result.stderr[-2000:]
        assert PASSWORD not in result.stdout + result.stderr
    assert f"download of {base_url}/missing.jsonl.gz failed: HTTP 404" in result.stderr
