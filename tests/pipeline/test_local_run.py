"""`sasrec run`: the compiled pipeline through KFP's local runner, against a local mirror."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow


def test_run_from_an_amazon_mirror_logs_one_mlflow_run(
    http_server, reviews_gz, tmp_path, mlflow_uri
):
    base_url, root, requests_seen = http_server
    (root / "raw" / "review_categories").mkdir(parents=True)
    shutil.copy(reviews_gz, root / "raw" / "review_categories" / "Video_Games.jsonl.gz")
    hparams = {"max_epochs": 3, "eval_every": 1, "hidden_size": 16}
    env = os.environ | {"SASREC_AMAZON_BASE_URL": base_url, "HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "sasrec.cli", "run", "--kcore", "0"]
    result = subprocess.run(
        [*command, "--hparams", json.dumps(hparams), "--param", "recommendations_k=4"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert requests_seen == ["/raw/review_categories/Video_Games.jsonl.gz"]

    metrics = json.loads((tmp_path / "outputs" / "metrics.json").read_text())
    for key in ("ndcg@10", "hit@10", "sampled_ndcg@10", "sampled_hit@10"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["hit@10"] >= metrics["ndcg@10"]
    # Task logs stream to stdout first; the metrics are printed last.
    assert json.loads(result.stdout[result.stdout.rindex('{\n  "') :]) == metrics
    model_dir = tmp_path / "outputs" / "model"
    assert {"model.pt", "config.json", "item_vocab.parquet", "training.json"} <= {
        p.name for p in model_dir.iterdir()
    }
    assert "<img" in (tmp_path / "outputs" / "evaluation" / "report.html").read_text()
    # The recommend step ran (on by default): top 10 per user, in original item ids.
    recommendations = pl.read_parquet(tmp_path / "outputs" / "recommendations.parquet")
    vocab = pl.read_parquet(model_dir / "item_vocab.parquet")
    assert recommendations["item_id"].is_in(vocab["item_id"].implode()).all()
    assert recommendations.group_by("user_id").len()["len"].max() == 4  # --param reached it

    client = MlflowClient(mlflow_uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "sasrec"]
    (run,) = client.search_runs([experiment.experiment_id])
    training = json.loads((model_dir / "training.json").read_text())
    assert run.info.run_id == training["mlflow_run_id"]
    assert run.info.status == "FINISHED"
    assert run.data.params["hidden_size"] == "16" and run.data.params["max_epochs"] == "3"
    assert run.data.params["num_blocks"] == "2"  # defaults are logged too
    (stats_json,) = (tmp_path / "outputs" / "pipeline_root").rglob("stats.json")
    assert run.data.params["data_num_items"] == str(json.loads(stats_json.read_text())["num_items"])
    history = client.get_metric_history(run.info.run_id, "val_ndcg_at_10")
    assert [m.step for m in history] == [1, 2, 3]
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 3
    assert run.data.metrics["test_ndcg_at_10"] == pytest.approx(metrics["ndcg@10"])
    assert run.data.metrics["test_sampled_hit_at_10"] == pytest.approx(metrics["sampled_hit@10"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model_dir")}
    assert "model_dir/model.pt" in artifacts
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="evaluation/metrics.json", tracking_uri=mlflow_uri
    )
    assert json.loads(Path(local).read_text()) == metrics


def test_failed_task_is_one_line_and_keeps_earlier_outputs(tmp_path, mlflow_uri):
    source = tmp_path / "two.txt"
    source.write_text("1 1\n1 2\n2 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "sasrec.cli", "run", "--source", str(source), "--kcore", "0"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("sasrec run: error: pipeline task 'sequences' failed")
    assert "\x1b[" not in last_line
    assert "3 interactions needed" in result.stdout  # the task's own log says why
    assert list((tmp_path / "outputs" / "pipeline_root").rglob("interactions.parquet"))
    assert not (tmp_path / "outputs" / "metrics.json").exists()


def test_docker_runner_without_an_mlflow_server_fails_before_any_task(tmp_path, monkeypatch):
    source = tmp_path / "three.txt"
    source.write_text("1 1\n1 2\n1 3\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    result = subprocess.run(
        [sys.executable, "-m", "sasrec.cli", "run", "--runner", "docker", "--source", str(source)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "the docker runner needs an MLflow server" in result.stderr.strip().splitlines()[-1]
    assert not list((tmp_path / "outputs" / "pipeline_root").rglob("*.parquet"))
