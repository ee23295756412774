"""Evaluation report, baselines and recommendations on a model that learned a real pattern."""

import base64
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from helpers import cyclic_reviews, write_reviews_jsonl_gz
from sasrec.config import parse_hparams
from sasrec.data.steps import download_step, sequences_step
from sasrec.evaluation.step import evaluate_step
from sasrec.serving.recommend import recommend_step
from sasrec.training.train import train_sasrec

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(model dir, sequences dir): SASRec trained on users walking 40 items in a cycle."""
    work = tmp_path_factory.mktemp("trained")
    source = write_reviews_jsonl_gz(work / "cyclic.jsonl.gz", cyclic_reviews())
    download_step(str(source), work / "raw", cache_dir=work / "cache")
    sequences_step(work / "raw" / "interactions.parquet", work / "seq", kcore=0)
    hparams = {"max_epochs": 40, "eval_every": 10, "hidden_size": 32, "dropout": 0.1}
    hparams |= {"lr": 0.01, "batch_size": 16}
    train_sasrec(work / "seq", work / "model", parse_hparams(hparams))
    return work / "model", work / "seq"


class ReportParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[bytes] = []
        self.headings: list[str] = []
        self.tables = 0
        self._in_heading = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "img":
            prefix = "data:image/png;base64,"
            assert attributes["src"].startswith(prefix)
            self.images.append(base64.b64decode(attributes["src"][len(prefix) :]))
        self.tables += tag == "table"
        self._in_heading = tag in ("h1", "h2", "h3")

    def handle_data(self, data: str) -> None:
        if self._in_heading:
            self.headings.append(data)
            self._in_heading = False


def test_evaluation_report_metrics_and_baselines(trained, tmp_path):
    model_dir, sequences_dir = trained
    metrics = evaluate_step(model_dir, sequences_dir, tmp_path / "eval")
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk == metrics
    assert all(key == key.lower() and " " not in key for key in metrics)
    for prefix in ("", "sampled_", "popsampled_", "val_"):
        for k in (1, 5, 10, 20, 50):
            assert {f"{prefix}ndcg@{k}", f"{prefix}hit@{k}", f"{prefix}mrr@{k}"} <= set(metrics)
    # The cycle is learnable from the last item alone: SASRec and the transition model find
    # it, popularity (flat over the cycle) cannot.
    assert metrics["ndcg@10"] > 0.9
    assert metrics["baseline_transition_ndcg@10"] > 0.9
    assert metrics["baseline_popularity_ndcg@10"] < 0.5
    assert metrics["ndcg@10"] >= metrics["mrr@10"] >= metrics["ndcg@1"]
    assert 0 < metrics["coverage@10"] <= 1

    parser = ReportParser()
    parser.feed((tmp_path / "eval" / "report.html").read_text())
    # The metric@K curves; 80 users fill no two breakdown buckets of 50, so no bars, a line each.
    assert len(parser.images) == 1
    assert all(image.startswith(PNG_SIGNATURE) and len(image) > 5000 for image in parser.images)
    # The answer first (the headline table), then the plots, then the details.
    assert parser.headings[:2] == ["SASRec evaluation report", "Details"]
    assert "Model against baselines, with beyond-accuracy figures" in parser.headings
    assert "Example test users" in parser.headings
    page = (tmp_path / "eval" / "report.html").read_text()
    headline = page[page.index('<section class="headline">') : page.index("</section>")]
    assert (
        f"<td>SASRec</td><td>{metrics['ndcg@10']:.4f} ±{metrics['ndcg@10_ci95']:.4f}</td>"
        f"<td>{metrics['hit@10']:.4f} ±{metrics['hit@10_ci95']:.4f}</td>" in headline
    )
    # 80 test users: the headline says they are too few to tell.
    assert '<p class="warning"><b>Warning:</b> only 80 test users' in headline
    assert page.count("all 80 test users fall in one bucket") == 2
    report = (Path(sequences_dir) / "report.html").resolve()
    assert f'<b>Data:</b> <a href="{report.as_uri()}">the sequences report</a>' in headline
    assert page.index("</section>") < page.index("<img")
    assert parser.tables >= 6
    breakdown = pl.read_csv(tmp_path / "eval" / "breakdowns.csv")
    users = breakdown.filter(
        (pl.col("breakdown") == "history_length") & (pl.col("scorer") == "sasrec")
    )["users"]
    assert users.sum() == metrics["num_test_users"] == 80


def sasrec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sasrec.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_recommend_for_a_history_in_original_ids(trained):
    model_dir, _ = trained
    result = sasrec(
        "recommend", "--model", str(model_dir), "--history", "B0005", "B0006", "-k", "3"
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert len(answer["item_ids"]) == 3 and answer["source"] == "sasrec"
    assert answer["item_ids"][0] == "B0007"  # the cycle's next item
    assert not {"B0005", "B0006"} & set(answer["item_ids"])
    assert answer["scores"] == sorted(answer["scores"], reverse=True)
    assert answer["unknown_ids"] == []


def test_recommend_answers_unknown_ids_with_the_most_popular_items(trained):
    model_dir, sequences_dir = trained
    result = sasrec("recommend", "--model", str(model_dir), "--history", "NOPE1", "NOPE2")
    assert result.returncode == 0, result.stderr
    assert "skipped 2 item ids the model does not know: ['NOPE1', 'NOPE2']" in result.stderr
    answer = json.loads(result.stdout)
    assert answer["source"] == "popularity" and answer["unknown_ids"] == ["NOPE1", "NOPE2"]
    counts = pl.read_parquet(sequences_dir / "train.parquet")["item_sequence"].explode()
    top_counts = sorted(counts.value_counts()["count"].to_list(), reverse=True)[:10]
    assert answer["scores"] == [float(c) for c in top_counts]


def test_recommendations_for_every_user(trained, tmp_path):
    model_dir, sequences_dir = trained
    summary = recommend_step(model_dir, sequences_dir, tmp_path / "recs", k=5)
    recs = pl.read_parquet(tmp_path / "recs" / "recommendations.parquet")
    assert recs.columns == ["user_id", "rank", "item_id", "score"]
    assert summary == {"num_users": 80, "num_rows": 400, "k": 5}
    assert recs["user_id"].n_unique() == 80 and recs.height == 400
    # User U003 walked items 3..10: the next item of the cycle is B0011, and nothing seen.
    user = recs.filter(pl.col("user_id") == "U003").sort("rank")
    assert user["rank"].to_list() == [1, 2, 3, 4, 5]
    assert user["item_id"][0] == "B0011"
    assert not set(user["item_id"]) & {f"B{i:04d}" for i in range(3, 11)}


def test_recommendations_need_a_positive_k_and_write_nothing_otherwise(trained, tmp_path):
    model_dir, sequences_dir = trained
    result = sasrec(
        "recommend", "--model", str(model_dir), "--sequences", str(sequences_dir),
        "--out", str(tmp_path / "recs"), "-k", "0",
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1]
        == "sasrec recommend: error: -k must be at least 1, got 0"
    )
    assert not (tmp_path / "recs").exists()


def test_recommend_names_a_missing_model_directory(tmp_path):
    result = sasrec("recommend", "--model", str(tmp_path / "nope"), "--history", "B0001")
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == (
        f"sasrec recommend: error: {tmp_path / 'nope'} is not a directory; "
        "give the output of `sasrec train`"
    )
