"""`sasrec run`: the compiled pipeline through KFP's local runner, against a local mirror."""

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

from helpers import cyclic_reviews, write_reviews_jsonl_gz

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
        [*command, "--hparams", json.dumps(hparams), "--param", "recommendations_k=4",
         "--param", "scoring_shards=2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert requests_seen == ["/raw/review_categories/Video_Games.jsonl.gz"]

    metrics = json.loads((tmp_path / "outputs" / "metrics.json").read_text())
    for key in ("ndcg@10", "hit@10", "sampled_ndcg@10", "sampled_hit@10"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["hit@10"] >= metrics["ndcg@10"]
    # The console leads with the answer: a line per task, then a short table; the task
    # logs (executor inputs and all) are in run.log.
    assert len(result.stdout.splitlines()) < 18, result.stdout
    (model_row,) = [line for line in result.stdout.splitlines() if line.startswith("SASRec ")]
    assert model_row.split()[1:5] == [
        f"{metrics['ndcg@10']:.4f}", f"±{metrics['ndcg@10_ci95']:.4f}",
        f"{metrics['hit@10']:.4f}", f"±{metrics['hit@10_ci95']:.4f}",
    ]  # fmt: skip
    assert "promotion: not registered" in result.stdout
    # How to serve what was just trained, registered or not: a model URI MLflow loads.
    (serve,) = [line for line in result.stdout.splitlines() if line.startswith("serve it")]
    assert f"MLFLOW_TRACKING_URI={mlflow_uri} make serve MODEL=runs:/" in serve
    printed_uri = serve.split("MODEL=")[1].split()[0]
    served = mlflow.pyfunc.load_model(printed_uri)
    assert served.metadata.run_id is not None
    # `make serve` without MODEL finds the same model, in the same store.
    last = subprocess.run(
        [sys.executable, "-m", "sasrec.serving.last_run", "outputs"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert last.stdout.split() == [f"MODEL_URI={printed_uri}", f"MLFLOW_TRACKING_URI={mlflow_uri}"]
    assert "  train          success in" in result.stderr
    assert "Got executor_input" in (tmp_path / "outputs" / "run.log").read_text()
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
    # Two scoring shards and two recommending ones ran, merged into every user once.
    pipeline_root = tmp_path / "outputs" / "pipeline_root"
    assert len(list(pipeline_root.rglob("ranks_test_sasrec.parquet"))) == 2
    assert len(list(pipeline_root.rglob("*/recommend/recommendations/*.parquet"))) == 2
    (train_file,) = pipeline_root.rglob("train.parquet")
    assert recommendations["user_id"].n_unique() == pl.read_parquet(train_file).height

    (stats_json,) = (tmp_path / "outputs" / "pipeline_root").rglob("stats.json")
    client = MlflowClient(mlflow_uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "sasrec"]
    (run,) = client.search_runs([experiment.experiment_id])
    training = json.loads((model_dir / "training.json").read_text())
    assert run.info.run_id == training["mlflow_run_id"]
    assert run.info.status == "FINISHED"
    # The UI: the experiment is model training, the run has a short name, the console a link.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert re.fullmatch(r"sasrec \d\d-\d\d \d\d:\d\d:\d\d", run.info.run_name), run.info.run_name
    (ui,) = [line for line in result.stdout.splitlines() if line.startswith("MLflow UI")]
    assert ui.split(maxsplit=2)[2] == (
        f"make mlflow-ui, then http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}"
        f"/runs/{run.info.run_id}?workflowType=machine_learning"
    )
    (data,) = [line for line in result.stdout.splitlines() if line.startswith("data report")]
    assert Path(data.split()[2]) == stats_json.parent / "report.html"
    assert run.data.params["hidden_size"] == "16" and run.data.params["max_epochs"] == "3"
    assert run.data.params["num_blocks"] == "2"  # defaults are logged too
    assert run.data.params["data/num_items"] == str(json.loads(stats_json.read_text())["num_items"])
    history = client.get_metric_history(run.info.run_id, "val/ndcg_at_10")
    assert [m.step for m in history] == [1, 2, 3]
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 3
    assert run.data.metrics["test/ndcg_at_10"] == pytest.approx(metrics["ndcg@10"])
    assert run.data.metrics["test_sampled/hit_at_10"] == pytest.approx(metrics["sampled_hit@10"])
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
    assert "3 interactions needed" in result.stderr  # the task's last lines say why
    assert "Got executor_input" not in result.stderr
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


def test_sweep_evaluates_and_registers_only_the_best_trial_on_validation(tmp_path, mlflow_uri):
    source = write_reviews_jsonl_gz(tmp_path / "cyclic.jsonl.gz", cyclic_reviews())
    # The models alone: with the cycle's transitions mixed in, both trials would be perfect.
    base = {"eval_every": 1, "batch_size": 16, "dropout": 0.1, "lr": 0.01, "transition_weight": 0}
    grid = [
        {"max_epochs": 1, "hidden_size": 8, "lr": 1e-5},  # barely trained
        {"max_epochs": 30, "eval_every": 10, "hidden_size": 32},
    ]
    result = subprocess.run(
        [sys.executable, "-m", "sasrec.cli", "run", "--source", str(source), "--kcore", "0",
         "--hparams", json.dumps(base), "--hparams-grid", json.dumps(grid),
         "--register-as", "games"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    model_dir = tmp_path / "outputs" / "model"
    training = json.loads((model_dir / "training.json").read_text())
    trials = json.loads((model_dir / "trials.json").read_text())
    assert [t["trial"] for t in trials] == [0, 1]
    assert trials[1]["val_ndcg@10"] > trials[0]["val_ndcg@10"]
    assert training["sweep_trial"] == 1 and training["hparams"]["max_epochs"] == 30

    client = MlflowClient(mlflow_uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "sasrec"]
    runs = {run.info.run_id: run for run in client.search_runs([experiment.experiment_id])}
    (parent,) = [r for r in runs.values() if "mlflow.parentRunId" not in r.data.tags]
    children = {t["trial"]: runs[t["mlflow_run_id"]] for t in trials}
    assert len(runs) == 3 and parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children.values()} == {parent.info.run_id}
    assert parent.data.tags["sweep.winner_run_id"] == training["mlflow_run_id"]
    # In the run table: the sweep under the job's short name, its trials under it by number.
    assert re.fullmatch(r"sasrec \d\d-\d\d \d\d:\d\d:\d\d", parent.info.run_name)
    assert {n: c.info.run_name for n, c in children.items()} == {0: "trial 0", 1: "trial 1"}
    # Only the winner was evaluated (test metrics) and registered.
    assert "test/ndcg_at_10" in children[1].data.metrics
    assert "test/ndcg_at_10" not in children[0].data.metrics
    (version,) = client.search_model_versions("name='games'")
    assert version.run_id == training["mlflow_run_id"]
    assert client.get_model_version_by_alias("games", "champion").version == version.version
    promotion = json.loads((tmp_path / "outputs" / "evaluation" / "promotion.json").read_text())
    assert promotion["decision"] == "first champion"
    assert "sweep: trial 1 of 2 won" in result.stdout
    assert "promotion: games version 1 is champion" in result.stdout
    report = (tmp_path / "outputs" / "evaluation" / "report.html").read_text()
    assert all(t["mlflow_run_id"] in report for t in trials)


def run_sweep(tmp_path: Path, grid: list[dict]) -> subprocess.CompletedProcess:
    source = write_reviews_jsonl_gz(tmp_path / "cyclic.jsonl.gz", cyclic_reviews())
    base = {"max_epochs": 3, "eval_every": 1, "batch_size": 16, "hidden_size": 16}
    return subprocess.run(
        [sys.executable, "-m", "sasrec.cli", "run", "--source", str(source), "--kcore", "0",
         "--hparams", json.dumps(base), "--hparams-grid", json.dumps(grid),
         "--register-as", "games"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def sweep_runs(uri: str) -> dict[str, list]:
    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "sasrec"]
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return {"parents": parents, "trials": [r for r in runs if r not in parents]}


CUDA_CAUSE = "device 'cuda' was asked for but no CUDA GPU is visible"


def test_a_failed_trial_is_reported_and_the_best_of_the_others_goes_on(tmp_path, mlflow_uri):
    result = run_sweep(tmp_path, [{"seed": 1}, {"device": "cuda"}, {"seed": 3}])
    assert result.returncode == 0, result.stderr[-3000:]
    trials = json.loads((tmp_path / "outputs" / "model" / "trials.json").read_text())
    assert [t["trial"] for t in trials] == [0, 1, 2]
    assert CUDA_CAUSE in trials[1]["error"] and trials[1]["val_ndcg@10"] is None
    winner = max((trials[0], trials[2]), key=lambda t: t["val_ndcg@10"])
    training = json.loads((tmp_path / "outputs" / "model" / "training.json").read_text())
    assert training["sweep_trial"] == winner["trial"]
    assert f"trial 1 failed: {CUDA_CAUSE}" in result.stdout  # the console summary
    report = html.unescape((tmp_path / "outputs" / "evaluation" / "report.html").read_text())
    assert CUDA_CAUSE in report
    assert json.loads((tmp_path / "outputs" / "metrics.json").read_text())["ndcg@10"] >= 0
    runs = sweep_runs(mlflow_uri)
    (parent,) = runs["parents"]
    assert parent.info.status == "FINISHED"
    assert CUDA_CAUSE in parent.data.tags["sweep.trial_1.error"]
    assert parent.data.metrics["failed_trials"] == 1.0
    assert {r.info.status for r in runs["trials"]} == {"FINISHED"}
    client = MlflowClient(mlflow_uri)
    assert (
        client.get_model_version_by_alias("games", "champion").run_id == training["mlflow_run_id"]
    )


def test_a_sweep_whose_every_trial_fails_says_each_cause_and_leaves_no_run_running(
    tmp_path, mlflow_uri
):
    result = run_sweep(tmp_path, [{"device": "cuda"}, {"device": "cuda", "seed": 2}])
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert "every trial of the sweep failed" in result.stderr
    assert f"trial 0: {CUDA_CAUSE}" in result.stderr and f"trial 1: {CUDA_CAUSE}" in result.stderr
    assert "select-trial" in last_line
    (parent,) = sweep_runs(mlflow_uri)["parents"]
    assert parent.info.status == "FAILED"
    client = MlflowClient(mlflow_uri)
    running = client.search_runs([parent.info.experiment_id], "attributes.status = 'RUNNING'")
    assert running == []


def test_local_runs_strip_retries_at_every_depth_of_the_pipeline(tmp_path):
    import yaml

    from pipelines.compile import compile_pipeline
    from sasrec.local_run import _without_retries

    compiled = compile_pipeline(tmp_path / "p.yaml", 2)
    assert "retryPolicy" in compiled.read_text()  # the train task, inside the sweep's loop
    spec = next(yaml.safe_load_all(compiled.read_text()))
    assert "retryPolicy" not in json.dumps(spec["root"]["dag"]["tasks"])  # not at the root
    assert "retryPolicy" not in _without_retries(compiled).read_text()


def test_task_lines_printed_from_parallel_threads_reach_run_log_whole(tmp_path):
    # The local runner runs a ParallelFor's tasks in threads (scoring shards), each printing
    # its subprocess's lines; progress bars hold 3-byte characters.
    import threading

    from sasrec.local_run import TaskProgress

    lines = {f"task {t} line {n} {'█' * (n % 7)}" for t in range(8) for n in range(400)}

    def print_lines(task: int) -> None:
        for n in range(400):
            print(f"task {task} line {n} {'█' * (n % 7)}\n", end="")

    with TaskProgress.to(tmp_path / "run.log"):
        threads = [threading.Thread(target=print_lines, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    written = (tmp_path / "run.log").read_text(encoding="utf-8").splitlines()
    assert sorted(written) == sorted(lines)
