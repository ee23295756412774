"""The four CLI steps as a user runs them, on real and synthetic data."""

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from helpers import cyclic_reviews, write_reviews_jsonl_gz
from sasrec.cli import main

FAST_HPARAMS = {"max_epochs": 2, "eval_every": 1, "hidden_size": 16, "batch_size": 32}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sasrec.cli", *args], capture_output=True, text=True, timeout=300
    )


def run_steps(source: Path, work: Path, kcore: int, hparams: dict) -> dict:
    assert (
        main(
            [
                "download",
                "--source",
                str(source),
                "--out",
                str(work / "raw"),
                "--cache-dir",
                str(work / "cache"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "sequences",
                "--interactions",
                str(work / "raw" / "interactions.parquet"),
                "--out",
                str(work / "seq"),
                "--kcore",
                str(kcore),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--sequences",
                str(work / "seq"),
                "--out",
                str(work / "model"),
                "--hparams",
                json.dumps(hparams),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(work / "model"),
                "--sequences",
                str(work / "seq"),
                "--out",
                str(work / "eval"),
            ]
        )
        == 0
    )
    return json.loads((work / "eval" / "metrics.json").read_text())  # fmt: skip


def test_four_steps_on_the_real_amazon_sample(amazon_sample_gz, tmp_path, mlflow_uri):
    metrics = run_steps(amazon_sample_gz, tmp_path, kcore=0, hparams=FAST_HPARAMS)
    interactions = pl.read_parquet(tmp_path / "raw" / "interactions.parquet")
    assert interactions.height == 1000
    assert interactions.schema == {
        "user_id": pl.String,
        "item_id": pl.String,
        "timestamp": pl.Int64,
        "rating": pl.Float64,
        "split": pl.String,
    }
    assert interactions.row(0) == (
        "AGCI7FAH4GL5FI65HYLKWTMFZ2CQ", "B07DK1H3H5", 1608186804795, 4.0, None
    )  # fmt: skip
    stats = json.loads((tmp_path / "seq" / "stats.json").read_text())
    assert (stats["num_users"], stats["num_items"]) == (327, 913)  # per the data's README
    assert set(metrics) >= {"ndcg@10", "hit@10", "sampled_ndcg@10", "sampled_hit@10"}
    assert metrics["num_test_users"] == stats["num_eval_users"]
    assert all(0.0 <= metrics[k] <= 1.0 for k in ("ndcg@10", "hit@10", "sampled_ndcg@10"))
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "_SASREC_STEP", "_SUCCESS", "config.json", "item_vocab.parquet", "model.pt",
        "popular_items.json", "training.json",
    ]  # fmt: skip


def test_sasrec_learns_a_sequential_pattern(tmp_path, mlflow_uri):
    # Every user walks 40 items in a cycle: the next item is fully determined by the last.
    source = write_reviews_jsonl_gz(tmp_path / "cyclic.jsonl.gz", cyclic_reviews())
    hparams = {"max_epochs": 40, "eval_every": 10, "hidden_size": 32, "dropout": 0.1, "lr": 0.01}
    metrics = run_steps(source, tmp_path, kcore=0, hparams=hparams | {"batch_size": 16})
    # A random order of the 40 - 7 unseen items gives NDCG@10 about 0.09 and HR@10 about 0.3.
    assert metrics["ndcg@10"] > 0.9
    assert metrics["sampled_ndcg@10"] > 0.9


def test_sasrec_text_format(tmp_path, mlflow_uri):
    lines = [f"{user} {item}" for user in range(1, 30) for item in range(user, user + 6)]
    source = tmp_path / "toy.txt"
    source.write_text("\n".join(lines) + "\n")
    assert main(["download", "--source", str(source), "--out", str(tmp_path / "raw")]) == 0
    frame = pl.read_parquet(tmp_path / "raw" / "interactions.parquet")
    assert frame.height == len(lines)
    assert frame["timestamp"].to_list() == list(range(len(lines)))  # file order is time order
    assert frame.row(0)[:2] == ("1", "1")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["download", "--source", "amazon2023:Nope", "--out", "x"],
            "unknown Amazon Reviews 2023 category 'Nope'",
        ),
        (
            ["download", "--source", "missing.jsonl", "--out", "x"],
            "'missing.jsonl' is not an existing file",
        ),
        (
            ["train", "--sequences", "s", "--out", "m", "--hparams", '{"epochs": 1}'],
            "unknown hparams epochs",
        ),
        (["run", "--source", "amazon2023:Nope"], "unknown Amazon Reviews 2023 category 'Nope'"),
        (["run", "--source", "data.csv"], "'data.csv' is not an existing file"),
    ],
)
def test_bad_input_is_one_line_and_non_zero_exit(args, message, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sasrec.cli", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_of_every_subcommand():
    for command in ("download", "sequences", "train", "evaluate", "run"):
        result = run_cli(command, "--help")
        assert result.returncode == 0
        assert "--" in result.stdout and f"sasrec {command}" in result.stdout


def test_evaluate_warns_and_keeps_metrics_when_the_mlflow_run_is_gone(tmp_path, mlflow_uri, caplog):
    source = write_reviews_jsonl_gz(tmp_path / "cyclic.jsonl.gz", cyclic_reviews())
    run_steps(source, tmp_path, kcore=0, hparams=FAST_HPARAMS)
    # The store that training used is gone, e.g. a pod-local one: point at an empty store.
    training_json = tmp_path / "model" / "training.json"
    training = json.loads(training_json.read_text())
    training["mlflow_tracking_uri"] = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    training_json.write_text(json.dumps(training))
    (tmp_path / "eval" / "metrics.json").unlink()
    args = ["evaluate", "--model", str(tmp_path / "model"), "--sequences", str(tmp_path / "seq")]
    assert main([*args, "--out", str(tmp_path / "eval")]) == 0
    assert "hit@10" in json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "test metrics not logged to MLflow" in caplog.text
