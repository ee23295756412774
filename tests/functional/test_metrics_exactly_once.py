"""Every epoch's metrics reach MLflow exactly once, whatever the server and the pod go through,
and training's outcome never depends on MLflow being up (real `mlflow server`, killed jobs)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from conftest import MlflowServer
from sasrec.errors import ServiceUnavailable
from sasrec.training.checkpoint import load_checkpoint
from sasrec.training.epoch_metrics import BufferedMetricsLogger

NO_MLFLOW_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
HPARAMS = {"max_epochs": 12, "eval_every": 4, "hidden_size": 16, "batch_size": 16, "patience": 99}


def sasrec_train(sequences_dir: Path, out: Path, uri: str) -> list[str]:
    return [
        sys.executable, "-m", "sasrec.cli", "train", "--sequences", str(sequences_dir),
        "--out", str(out), "--hparams", json.dumps(HPARAMS), "--tracking-uri", uri,
    ]  # fmt: skip


def start_job(
    sequences_dir: Path, tmp_path: Path, uri: str, env: dict | None = None, **popen: object
) -> subprocess.Popen:
    """`sasrec train` into tmp_path/model, in the background (stderr discarded unless asked)."""
    popen.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(
        sasrec_train(sequences_dir, tmp_path / "model", uri), cwd=tmp_path, env=env, **popen
    )


def rerun_job(sequences_dir: Path, tmp_path: Path, uri: str, env: dict | None = None) -> str:
    """The same `sasrec train` again, to its end; its stderr (the run must succeed)."""
    rerun = subprocess.run(
        sasrec_train(sequences_dir, tmp_path / "model", uri),
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return rerun.stderr


def checkpoint_epoch(path: Path) -> int:
    try:
        return load_checkpoint(path, torch.device("cpu"))["epoch"]
    except Exception:  # being replaced right now
        return 0


def wait_until(condition, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def wait_for_params(client: MlflowClient, run_file: Path) -> None:
    """Until the new run holds its params (they are sent before training, unbuffered)."""
    wait_until(run_file.exists)
    run_id = json.loads(run_file.read_text())["run_id"]
    wait_until(lambda: bool(client.get_run(run_id).data.params))


def assert_each_epoch_once(client: MlflowClient, run_id: str, epochs: int) -> list:
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))  # a list: no doubles
    return history


@pytest.mark.server
@pytest.mark.long
def test_an_outage_then_a_killed_pod_loses_no_epoch_and_keeps_their_times(
    sequences_dir, tmp_path, mlflow_server: MlflowServer
):
    env = os.environ | NO_MLFLOW_RETRIES | {"SASREC_MLFLOW_OUTAGE_SECONDS": "600"}
    checkpoint = tmp_path / "model.checkpoint" / "checkpoint.pt"
    run_file = tmp_path / "model.checkpoint" / "mlflow_run.json"
    worker = start_job(sequences_dir, tmp_path, mlflow_server.uri, env)
    wait_for_params(MlflowClient(mlflow_server.uri), run_file)
    mlflow_server.kill()  # the server goes away before any epoch is sent
    wait_until(lambda: checkpoint_epoch(checkpoint) >= 3)
    os.kill(worker.pid, signal.SIGKILL)  # and then the pod
    worker.wait()
    kept = load_checkpoint(checkpoint, torch.device("cpu"))["history"]
    assert len(kept) >= 3
    mlflow_server.start()
    rerun_job(sequences_dir, tmp_path, mlflow_server.uri, env)
    client = MlflowClient(mlflow_server.uri)
    run_id = json.loads((tmp_path / "model" / "training.json").read_text())["mlflow_run_id"]
    history = assert_each_epoch_once(client, run_id, HPARAMS["max_epochs"])
    times = {m.step: m.timestamp for m in history}
    assert all(times[r["epoch"]] == r["timestamp_ms"] for r in kept)  # as measured, not as sent


@pytest.mark.long
def test_a_kill_after_an_epoch_was_sent_does_not_send_it_twice(sequences_dir, tmp_path, mlflow_uri):
    checkpoint = tmp_path / "model.checkpoint" / "checkpoint.pt"
    worker = start_job(sequences_dir, tmp_path, mlflow_uri)
    client = MlflowClient(mlflow_uri)
    run_file = tmp_path / "model.checkpoint" / "mlflow_run.json"
    wait_until(run_file.exists)
    run_id = json.loads(run_file.read_text())["run_id"]
    # Killed once MLflow holds the checkpointed epoch: the rerun re-announces that epoch.
    wait_until(
        lambda: (
            (epoch := checkpoint_epoch(checkpoint)) >= 3
            and epoch in {m.step for m in client.get_metric_history(run_id, "train/loss")}
        )
    )
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    rerun_stderr = rerun_job(sequences_dir, tmp_path, mlflow_uri)
    assert "resumed from" in rerun_stderr
    assert_each_epoch_once(client, run_id, HPARAMS["max_epochs"])
    for key in ("val/best_ndcg_at_10", "train/seconds"):
        assert len(client.get_metric_history(run_id, key)) == 1


@pytest.mark.server
@pytest.mark.long
def test_an_outage_past_the_allowance_keeps_the_training_and_the_rerun_only_logs(
    sequences_dir, tmp_path, mlflow_server: MlflowServer
):
    env = os.environ | NO_MLFLOW_RETRIES | {"SASREC_MLFLOW_OUTAGE_SECONDS": "2"}
    run_file = tmp_path / "model.checkpoint" / "mlflow_run.json"
    worker = start_job(
        sequences_dir, tmp_path, mlflow_server.uri, env, stderr=subprocess.PIPE, text=True
    )
    wait_for_params(MlflowClient(mlflow_server.uri), run_file)
    mlflow_server.kill()
    _, stderr = worker.communicate(timeout=300)
    assert worker.returncode == 2, stderr[-3000:]
    assert "the model and the checkpoint are kept" in stderr
    assert (tmp_path / "model" / "model.pt").is_file()
    checkpoint = tmp_path / "model.checkpoint" / "checkpoint.pt"
    assert checkpoint_epoch(checkpoint) == HPARAMS["max_epochs"]  # the whole training is kept

    mlflow_server.start()
    # The rerun has a server that answers: a loaded machine must not turn its slow first
    # answers into a second outage.
    patient = env | {"SASREC_MLFLOW_OUTAGE_SECONDS": "120"}
    rerun_stderr = rerun_job(sequences_dir, tmp_path, mlflow_server.uri, patient)
    assert f"after epoch {HPARAMS['max_epochs']}" in rerun_stderr  # nothing trained again
    client = MlflowClient(mlflow_server.uri)
    run_id = json.loads((tmp_path / "model" / "training.json").read_text())["mlflow_run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1  # the same run, not a new one
    assert_each_epoch_once(client, run_id, HPARAMS["max_epochs"])
    assert len(run.outputs.model_outputs) == 1
    assert not checkpoint.exists()


def test_close_keeps_its_deadline_when_the_server_never_answers():
    # A server that takes the connection and never answers: MLflow's own timeouts and
    # retries inside one call would take minutes.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    accepting = threading.Thread(
        target=lambda: [held.append(listener.accept()[0]) for _ in range(16)], daemon=True
    )
    accepting.start()
    uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
    buffer = BufferedMetricsLogger(uri, "0" * 32, max_outage_s=1)
    buffer.put({"epoch": 1, "timestamp_ms": 1, "metrics": {"train_loss": 1.0}})
    start = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="did not take the epoch metrics in 1 s"):
        buffer.close()
    assert time.monotonic() - start < 2.0
    listener.close()
