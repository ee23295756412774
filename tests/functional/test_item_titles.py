"""Item titles from the real Amazon Reviews 2023 metadata sample, fetched from a mirror on
127.0.0.1, carried through the steps into the report and the recommendations."""

import gzip
import json
import shutil

import polars as pl
import pytest

from conftest import shared_file
from sasrec.config import parse_hparams
from sasrec.data.steps import download_step, sequences_step
from sasrec.errors import SASRecError
from sasrec.evaluation.step import evaluate_step
from sasrec.serving.recommend import recommend_for_history
from sasrec.training.train import train_sasrec


def test_titles_reach_the_report_and_recommendations(http_server, tmp_path, mlflow_uri):
    reviews = shared_file("amazon-reviews-2023-video-games-sample/Video_Games.jsonl.gz")
    meta = shared_file("amazon-reviews-2023-video-games-sample/meta_Video_Games.jsonl.gz")
    base_url, root, seen = http_server
    for folder, source in (("review_categories", reviews), ("meta_categories", meta)):
        (root / "raw" / folder).mkdir(parents=True)
        shutil.copyfile(source, root / "raw" / folder / source.name)
    counts = download_step("amazon2023:Video_Games", tmp_path / "raw", base_url,
                           tmp_path / "cache", with_metadata=True)  # fmt: skip
    assert "/raw/meta_categories/meta_Video_Games.jsonl.gz" in seen
    expected = {
        record["parent_asin"]: record["title"]
        for record in map(json.loads, gzip.decompress(meta.read_bytes()).decode().splitlines())
    }
    titles = dict(pl.read_parquet(tmp_path / "raw" / "item_titles.parquet").rows())
    assert counts["num_item_titles"] == len(titles) == 1000
    assert titles == expected
    sequences_step(tmp_path / "raw" / "interactions.parquet", tmp_path / "seq", kcore=0)
    vocab = pl.read_parquet(tmp_path / "seq" / "item_vocab.parquet")["item_id"].to_list()
    kept = dict(pl.read_parquet(tmp_path / "seq" / "item_titles.parquet").rows())
    assert kept == {item: expected[item] for item in vocab if item in expected}
    assert kept  # the sample's reviews and metadata share items
    hparams = parse_hparams({"max_epochs": 2, "eval_every": 1, "hidden_size": 16})
    train_sasrec(tmp_path / "seq", tmp_path / "model", hparams)
    evaluate_step(tmp_path / "model", tmp_path / "seq", tmp_path / "evaluation")
    report = (tmp_path / "evaluation" / "report.html").read_text()
    recommended = recommend_for_history(tmp_path / "model", [next(iter(kept))], k=5)
    assert len(recommended["item_ids"]) == len(recommended["titles"]) == 5
    assert recommended["titles"] == [kept.get(item) for item in recommended["item_ids"]]
    assert any(f"{item} (" in report for item in kept)  # the examples show "id (title)"


def test_metadata_needs_an_amazon_source(tmp_path):
    source = tmp_path / "pairs.txt"
    source.write_text("1 2\n")
    with pytest.raises(SASRecError, match="--with-metadata needs an amazon2023:<Category>"):
        download_step(str(source), tmp_path / "raw", with_metadata=True)
    assert not (tmp_path / "raw" / "interactions.parquet").exists()
