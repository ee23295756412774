"""s3:// sources through s3fs, against moto's S3 API server on 127.0.0.1 (as MinIO would be)."""

import subprocess
import sys

import boto3
import polars as pl


def download_cli(source: str, tmp_path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "sasrec.cli", "download", "--source", source]
    command += ["--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_s3_source_is_downloaded_and_converted(s3_server, reviews_gz, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="reviews")
    s3.put_object(Bucket="reviews", Key="raw/Video_Games.jsonl.gz", Body=reviews_gz.read_bytes())
    result = download_cli("s3://reviews/raw/Video_Games.jsonl.gz", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    downloaded = pl.read_parquet(tmp_path / "out" / "interactions.parquet")
    expected = pl.read_ndjson(reviews_gz).select("user_id", pl.col("parent_asin").alias("item_id"))
    assert downloaded.select("user_id", "item_id").equals(expected)


def test_missing_s3_object_is_a_clear_error(s3_server, tmp_path):
    boto3.client("s3").create_bucket(Bucket="reviews")
    result = download_cli("s3://reviews/nope.jsonl.gz", tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "sasrec download: error: download of s3://reviews/nope.jsonl.gz failed: "
        "no such object; check the URL"
    )
    assert not (tmp_path / "out").exists()
