"""Downloads over real HTTP on 127.0.0.1."""

import shutil

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
