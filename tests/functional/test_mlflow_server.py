"""Tracking against a real `mlflow server`: a restart mid-training, and what a run lookup
tells apart (no such run, refused credentials, no server)."""

import json
import os
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from conftest import MlflowServer, free_port
from sasrec import tracking
from sasrec.errors import SASRecError

pytestmark = [pytest.mark.slow, pytest.mark.server]

# MLflow's own HTTP retries would bridge a short outage by themselves; with none, a failed
# request reaches the caller at once, as after a long outage, so this test stays short.
NO_MLFLOW_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def test_training_outlasts_an_mlflow_server_restart_with_every_epoch_logged(
    sequences_dir, tmp_path, mlflow_server: MlflowServer
):
    hparams = {"max_epochs": 300, "eval_every": 50, "hidden_size": 16, "batch_size": 16,
               "patience": 99}  # fmt: skip
    command = [
        sys.executable, "-m", "sasrec.cli", "train", "--sequences", str(sequences_dir),
        "--out", str(tmp_path / "model"), "--hparams", json.dumps(hparams),
        "--tracking-uri", mlflow_server.uri,
    ]  # fmt: skip
    stderr = (tmp_path / "train.log").open("w+")
    worker = subprocess.Popen(
        command, cwd=tmp_path, env=os.environ | NO_MLFLOW_RETRIES, stderr=stderr
    )
    client = MlflowClient(mlflow_server.uri)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and worker.poll() is None:
        runs = client.search_runs(["0", *_experiment_ids(client)])
        if runs and len(client.get_metric_history(runs[0].info.run_id, "train/loss")) >= 2:
            break
        time.sleep(0.2)
    mlflow_server.kill()  # as a crashed or rescheduled server pod
    time.sleep(10)
    assert worker.poll() is None, "training ended during the outage"
    mlflow_server.start()  # the same port and store
    assert worker.wait(timeout=600) == 0, (tmp_path / "train.log").read_text()[-3000:]

    log_text = (tmp_path / "train.log").read_text()
    assert "MLflow did not take the metrics" in log_text  # the outage was met while training
    training = json.loads((tmp_path / "model" / "training.json").read_text())
    run = client.get_run(training["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(set(steps)) == list(range(1, training["epochs_run"] + 1))
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"model_dir"}
    assert run.data.tags[tracking.GIT_COMMIT_TAG] == run.data.params["code/git_commit"]


def _experiment_ids(client: MlflowClient) -> list[str]:
    return [e.experiment_id for e in client.search_experiments()]


def test_run_lookup_tells_no_such_run_from_a_server_that_cannot_answer(
    mlflow_server: MlflowServer, monkeypatch
):
    run_id = MlflowClient(mlflow_server.uri).create_run("0").info.run_id
    assert tracking.run_exists(mlflow_server.uri, run_id)
    assert not tracking.run_exists(mlflow_server.uri, "0" * 32)
    for name, value in NO_MLFLOW_RETRIES.items():
        monkeypatch.setenv(name, value)
    nothing_there = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SASRecError, match="check that the server is up and reachable"):
        tracking.run_exists(nothing_there, run_id)
