"""Preemption: SIGTERM mid-epoch saves the exact place, the rerun ends with the same weights."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from helpers import cyclic_reviews, write_reviews_jsonl_gz
from sasrec.data.steps import download_step, sequences_step
from sasrec.training.checkpoint import load_checkpoint
from sasrec.training.preemption import PREEMPTED_EXIT_CODE

pytestmark = pytest.mark.long

# Many small batches and no validation until the end: an epoch is mostly batches, so a
# SIGTERM at a random moment lands inside one.
HPARAMS = {"max_epochs": 8, "eval_every": 8, "hidden_size": 16, "batch_size": 4, "patience": 9}


@pytest.fixture
def many_users(tmp_path: Path) -> Path:
    source = write_reviews_jsonl_gz(tmp_path / "many.jsonl.gz", cyclic_reviews(num_users=600))
    download_step(str(source), tmp_path / "raw", cache_dir=tmp_path / "cache")
    sequences_step(tmp_path / "raw" / "interactions.parquet", tmp_path / "seq", kcore=0)
    return tmp_path / "seq"


def sasrec_train(sequences_dir: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "sasrec.cli", "train", "--sequences", str(sequences_dir),
        "--out", str(out), "--hparams", json.dumps(HPARAMS),
    ]  # fmt: skip


def test_sigterm_mid_epoch_saves_the_place_and_the_rerun_ends_with_the_same_weights(
    many_users, tmp_path, mlflow_uri
):
    straight = subprocess.run(sasrec_train(many_users, tmp_path / "straight"), capture_output=True)
    assert straight.returncode == 0, straight.stderr
    worker = subprocess.Popen(
        sasrec_train(many_users, tmp_path / "model"), stderr=subprocess.PIPE, text=True
    )
    checkpoint = tmp_path / "model.checkpoint" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.02)
    time.sleep(0.15)  # into the next epoch
    os.kill(worker.pid, signal.SIGTERM)
    sent = time.monotonic()
    _, stderr = worker.communicate(timeout=60)
    exit_seconds = time.monotonic() - sent
    assert worker.returncode == PREEMPTED_EXIT_CODE, stderr
    assert exit_seconds < 10, exit_seconds  # well inside Kubernetes' default 30 s grace
    saved = load_checkpoint(checkpoint, torch.device("cpu"))
    assert saved["partial"], "SIGTERM landed between epochs: the test needs it inside one"
    epoch, batch = saved["epoch"] + 1, saved["partial"]["batches_done"]
    assert batch > 0 and epoch < HPARAMS["max_epochs"]
    assert f"checkpointed at batch {batch} of epoch {epoch}" in stderr
    assert not (tmp_path / "model").exists()
    run_id = json.loads((tmp_path / "model.checkpoint" / "mlflow_run.json").read_text())["run_id"]
    assert mlflow.MlflowClient().get_run(run_id).info.status == "KILLED"

    rerun = subprocess.run(
        sasrec_train(many_users, tmp_path / "model"), capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"batch {batch} of epoch {epoch}" in rerun.stderr
    first = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    resumed = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    for name, tensor in first.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)
    client = mlflow.MlflowClient()
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, HPARAMS["max_epochs"] + 1))
    assert client.get_run(run_id).info.status == "FINISHED"
    assert not checkpoint.exists()


def test_sigterm_stops_two_torchrun_processes_at_the_same_batch_and_the_rerun_matches(
    many_users, tmp_path, mlflow_uri, monkeypatch
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same thread settings in every run
    two = ["--nproc", "2"]
    straight = subprocess.run(
        sasrec_train(many_users, tmp_path / "straight") + two, capture_output=True
    )
    assert straight.returncode == 0, straight.stderr
    worker = subprocess.Popen(
        sasrec_train(many_users, tmp_path / "model") + two, stderr=subprocess.PIPE, text=True
    )
    checkpoint = tmp_path / "model.checkpoint" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)
    worker.send_signal(signal.SIGTERM)  # to the parent, as the pod's first process gets it
    _, stderr = worker.communicate(timeout=120)
    assert worker.returncode == PREEMPTED_EXIT_CODE, stderr[-3000:]
    saved = load_checkpoint(checkpoint, torch.device("cpu"))
    assert saved["partial"], "SIGTERM landed between epochs: the test needs it inside one"
    assert len(saved["rng_states"]) == 2  # both processes' random states
    assert stderr.count("checkpointed at batch") == 1  # rank 0 writes and says so
    rerun = subprocess.run(
        sasrec_train(many_users, tmp_path / "model") + two, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    first = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    resumed = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    for name, tensor in first.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)
