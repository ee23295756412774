"""Training as a long job: interruption and resume, NaN, reproducibility, DDP, MLflow model."""

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import mlflow
import pandas as pd
import polars as pl
import pytest
import torch

from conftest import free_port
from helpers import cyclic_reviews, write_reviews_jsonl_gz
from sasrec.config import parse_hparams
from sasrec.data import schema
from sasrec.data.steps import download_step, sequences_step
from sasrec.errors import SASRecError
from sasrec.inputs import read_sequences
from sasrec.io import read_json
from sasrec.model import SASRec
from sasrec.model_dir import load_model_dir
from sasrec.training.checkpoint import load_checkpoint
from sasrec.training.data_defaults import log_popularity
from sasrec.training.losses import NextItemObjective
from sasrec.training.state import weight_average
from sasrec.training.train import (
    fit,
    initial_model,
    model_config,
    start_training_on,
    train_and_save,
    train_epoch,
    train_sasrec,
    training_tensors,
)

HPARAMS = {"max_epochs": 6, "eval_every": 2, "hidden_size": 16, "batch_size": 16, "patience": 9}


class Interrupted(Exception):
    pass


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(model_dir / "model.pt", weights_only=True)


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0, msg=name)


def test_same_seed_gives_identical_models_and_another_seed_does_not(sequences_dir, tmp_path):
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        train_sasrec(sequences_dir, tmp_path / name, parse_hparams(HPARAMS | {"seed": seed}))
    assert_same_weights(tmp_path / "a", tmp_path / "b")
    assert not torch.equal(
        weights(tmp_path / "a")["item_emb.weight"], weights(tmp_path / "c")["item_emb.weight"]
    )


@pytest.mark.parametrize(
    ("loss", "schedule", "ema_decay"),
    [("bce", "constant", 0.0), ("gbce", "cosine", 0.0), ("sampled_softmax", "constant", 0.9)],
)
def test_resume_after_interruption_equals_an_uninterrupted_run(
    sequences_dir, tmp_path, loss, schedule, ema_decay
):
    overrides = {"loss": loss, "num_negatives": 4, "lr_schedule": schedule, "ema_decay": ema_decay}
    hparams = parse_hparams(HPARAMS | overrides)
    train_sasrec(sequences_dir, tmp_path / "straight", hparams)

    def stop_after_epoch_3(metrics: dict, epoch: int) -> None:
        if epoch == 3:
            raise Interrupted

    checkpoint = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupted):
        train_sasrec(
            sequences_dir, tmp_path / "resumed", hparams, None, stop_after_epoch_3, checkpoint
        )
    assert load_checkpoint(checkpoint, torch.device("cpu"))["epoch"] == 3
    assert not (tmp_path / "resumed").exists()
    epochs_logged = []
    _, summary = train_sasrec(
        sequences_dir, tmp_path / "resumed", hparams, None,
        lambda metrics, epoch: epochs_logged.append(epoch), checkpoint,
    )  # fmt: skip
    assert epochs_logged == [3, 4, 5, 6]  # epoch 3 again: its logging may have been cut off
    assert summary["epochs_run"] == 6
    assert_same_weights(tmp_path / "straight", tmp_path / "resumed")
    assert not checkpoint.exists()  # done: the model directory replaces it


def test_weight_average_is_the_warmed_up_moving_average_of_the_weights_after_each_step(
    sequences_dir,
):
    hparams = parse_hparams(HPARAMS | {"ema_decay": 0.3, "dropout": 0.7})
    train = pl.read_parquet(sequences_dir / schema.TRAIN_FILE)
    num_items = read_json(sequences_dir / schema.STATS_FILE)["num_items"]
    sequences, lengths = training_tensors(train, hparams.max_len)
    model = SASRec(model_config(num_items, hparams))
    average = weight_average(model, hparams.ema_decay)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    after_each_step = []

    def record_then_update(items: torch.Tensor | None) -> None:
        after_each_step.append(model.item_emb.weight.detach().clone())
        average.update_parameters(model, items)

    generator = torch.Generator().manual_seed(0)
    objective = NextItemObjective(model, hparams.loss)
    train_epoch(objective, optimizer, sequences, lengths, hparams, generator, num_items,
                record_then_update)  # fmt: skip
    assert len(after_each_step) >= 5  # decays 2/11, 3/12, then capped at 0.3 (4/13 > 0.3)
    expected = after_each_step[0]  # the average starts at the first step's weights
    for updates_so_far, step_weights in enumerate(after_each_step[1:], start=1):
        decay = min(0.3, (1 + updates_so_far) / (10 + updates_so_far))
        expected = decay * expected + (1 - decay) * step_weights
    torch.testing.assert_close(average.module.item_emb.weight, expected)
    assert not torch.allclose(expected, after_each_step[-1])


def test_item_bias_starts_at_the_centred_log_count_of_each_item():
    train = pl.DataFrame({schema.ITEM_SEQUENCE: [[1, 2, 1], [3]]})
    log_counts = [math.log(3), math.log(2), math.log(2), 0.0]  # items 1..4 seen 2, 1, 1, 0 times
    mean = sum(log_counts) / 4
    expected = torch.tensor([0.0, *(value - mean for value in log_counts)])
    torch.testing.assert_close(log_popularity(train, num_items=4), expected)


def test_trained_models_start_from_the_log_count_item_bias(tmp_path):
    # 50 users on a cycle of 40 items: the first items are walked more often than the rest.
    source = write_reviews_jsonl_gz(tmp_path / "r.jsonl.gz", cyclic_reviews(num_users=50))
    download_step(str(source), tmp_path / "raw", cache_dir=tmp_path / "cache")
    sequences_dir = tmp_path / "seq"
    sequences_step(tmp_path / "raw" / "interactions.parquet", sequences_dir, kcore=0)
    train = pl.read_parquet(sequences_dir / schema.TRAIN_FILE)
    num_items = read_json(sequences_dir / schema.STATS_FILE)["num_items"]
    expected = log_popularity(train, num_items)
    assert expected.max() - expected.min() > 0.5  # counts differ, so a start at 0 would fail
    model = initial_model(train, num_items, parse_hparams(HPARAMS | {"dropout": 0.5}))
    torch.testing.assert_close(model.item_bias.detach(), expected)
    # train_sasrec starts there too: with a learning rate too small to move it, it ends there.
    hparams = parse_hparams(HPARAMS | {"lr": 1e-12})
    trained, _ = train_sasrec(sequences_dir, tmp_path / "m", hparams)
    torch.testing.assert_close(trained.item_bias.detach(), expected)


def test_checkpoint_of_other_hparams_is_not_resumed(sequences_dir, tmp_path):
    checkpoint = tmp_path / "ckpt.pt"

    def stop(metrics: dict, epoch: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        train_sasrec(sequences_dir, tmp_path / "m", parse_hparams(HPARAMS), None, stop, checkpoint)
    epochs = []
    other = parse_hparams(HPARAMS | {"lr": 0.002})
    train_sasrec(
        sequences_dir, tmp_path / "m", other, None, lambda m, e: epochs.append(e), checkpoint
    )
    assert epochs[0] == 1


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(
    sequences_dir, tmp_path
):
    checkpoint = tmp_path / "ckpt.pt"
    training = start_training_on(read_sequences(sequences_dir), parse_hparams(HPARAMS), checkpoint)

    def corrupt_weights_after_epoch_2(epoch: int, metrics: dict, model: SASRec) -> None:
        if epoch == 2:
            training.state.model.item_emb.weight.data.fill_(float("nan"))

    with pytest.raises(SASRecError, match=r"loss became nan at epoch 3.*epoch 2 is kept"):
        fit(training, corrupt_weights_after_epoch_2)
    kept = load_checkpoint(checkpoint, torch.device("cpu"))
    assert kept["epoch"] == 2
    assert all(torch.isfinite(t).all() for t in kept["model"].values())


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_non_finite_weights_with_a_finite_loss_stop_training_and_write_no_model(
    sequences_dir, tmp_path, ema_decay
):
    # An infinity in a row no batch uses: the loss stays finite, the weights (and their
    # average, which starts as a copy) do not.
    hparams = parse_hparams(HPARAMS | {"ema_decay": ema_decay})
    sequences = read_sequences(sequences_dir)
    training = start_training_on(sequences, hparams)
    with torch.no_grad():
        training.state.model.item_emb.weight[0, 0] = float("inf")  # padding: never looked up
    with pytest.raises(SASRecError, match="the weights became non-finite at epoch 1: lower lr"):
        train_and_save(training, sequences, tmp_path / "model")
    assert not (tmp_path / "model").exists()


def sasrec_train(sequences_dir: Path, out: Path, hparams: dict, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "sasrec.cli", "train", "--sequences", str(sequences_dir),
        "--out", str(out), "--hparams", json.dumps(hparams), *extra,
    ]  # fmt: skip


def assert_resumed_in_one_run_like_the_straight_one(tmp_path: Path, epochs: int) -> None:
    """tmp_path/model, killed and resumed, equals tmp_path/straight, in one MLflow run."""
    assert_same_weights(tmp_path / "straight", tmp_path / "model")
    runs = mlflow.search_runs(experiment_names=["sasrec"], output_format="list")
    assert len(runs) == 2  # the straight run and one run for the killed-and-resumed job
    resumed_run = json.loads((tmp_path / "model" / "training.json").read_text())["mlflow_run_id"]
    history = mlflow.MlflowClient().get_metric_history(resumed_run, "train/loss")
    assert sorted({m.step for m in history}) == list(range(1, epochs + 1))


@pytest.mark.long
def test_killed_training_run_resumes_in_the_same_mlflow_run(sequences_dir, tmp_path, mlflow_uri):
    hparams = HPARAMS | {"max_epochs": 25, "eval_every": 5, "patience": 99}
    straight = subprocess.run(
        sasrec_train(sequences_dir, tmp_path / "straight", hparams), capture_output=True
    )
    assert straight.returncode == 0, straight.stderr
    worker = subprocess.Popen(
        sasrec_train(sequences_dir, tmp_path / "model", hparams), stderr=subprocess.DEVNULL
    )
    checkpoint = tmp_path / "model.checkpoint" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    killed_at = load_checkpoint(checkpoint, torch.device("cpu"))["epoch"]
    assert 1 <= killed_at < 25 and not (tmp_path / "model").exists()
    rerun = subprocess.run(
        sasrec_train(sequences_dir, tmp_path / "model", hparams), capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed from {checkpoint} after epoch {killed_at}" in rerun.stderr
    assert_resumed_in_one_run_like_the_straight_one(tmp_path, epochs=25)


@pytest.mark.long
@pytest.mark.parametrize("sparse_item_updates", [True, False])
def test_two_gloo_processes_match_one_process(
    sequences_dir, tmp_path, mlflow_uri, sparse_item_updates
):
    # Equal-length sequences and no dropout: each process's half-batch mean averages to the
    # full-batch mean, so the two runs differ only by float rounding.
    hparams = HPARAMS | {
        "max_epochs": 2, "dropout": 0.0, "sparse_item_updates": sparse_item_updates
    }  # fmt: skip
    one = subprocess.run(
        sasrec_train(sequences_dir, tmp_path / "one", hparams), capture_output=True
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        sasrec_train(sequences_dir, tmp_path / "two", hparams, "--nproc", "2"),
        capture_output=True,
        text=True,
    )
    assert two.returncode == 0, two.stderr
    info = json.loads((tmp_path / "two" / "training.json").read_text())
    assert info["processes"] == 2
    # Compare what the models compute, not raw weights: the key bias of attention has a zero
    # gradient in exact arithmetic, and Adam turns its rounding noise into full-size steps
    # without changing any output.
    one_model, two_model = (
        load_model_dir(tmp_path / n, torch.device("cpu")) for n in ("one", "two")
    )
    histories = torch.arange(1, 41).view(8, 5)
    torch.testing.assert_close(one_model(histories), two_model(histories), rtol=1e-3, atol=1e-3)
    runs = mlflow.search_runs(experiment_names=["sasrec"], output_format="list")
    assert len(runs) == 2  # one MLflow run per job, not per process


@pytest.mark.long
def test_two_nodes_of_one_process_train_the_weights_of_one_node_of_two(
    sequences_dir, tmp_path, mlflow_uri
):
    # What a TrainJob of 2 nodes runs (`sasrec train-node`, torchrun taking the rendezvous
    # from the PET_* variables the Trainer sets), over 127.0.0.1; the same 2 ranks and
    # thread settings as `--nproc 2` on one node, so the same arithmetic in the same order.
    hparams = json.dumps(HPARAMS | {"max_epochs": 2})
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    one_node = subprocess.run(
        sasrec_train(sequences_dir, tmp_path / "one", HPARAMS | {"max_epochs": 2}, "--nproc", "2"),
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert one_node.returncode == 0, one_node.stderr[-3000:]
    rendezvous = {"PET_NNODES": "2", "PET_MASTER_ADDR": "127.0.0.1"}
    rendezvous["PET_MASTER_PORT"] = str(free_port())
    node_command = [
        sys.executable, "-m", "sasrec.cli", "train-node", "--sequences", str(sequences_dir),
        "--out", str(tmp_path / "two"), "--nproc", "1", "--", "--hparams", hparams,
        "--checkpoint-dir", str(tmp_path / "nodes.checkpoint"),
    ]  # fmt: skip
    nodes = [
        subprocess.Popen(
            node_command,
            env=env | rendezvous | {"PET_NODE_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for node in nodes:
        _, stderr = node.communicate(timeout=600)
        assert node.returncode == 0, stderr[-3000:]
    info = json.loads((tmp_path / "two" / "training.json").read_text())
    assert info["processes"] == 2
    assert_same_weights(tmp_path / "one", tmp_path / "two")


def test_registered_model_recommends_like_the_artifact(sequences_dir, tmp_path, mlflow_uri):
    result = subprocess.run(
        sasrec_train(sequences_dir, tmp_path / "model", HPARAMS, "--register-as", "sasrec-games"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    run_id = json.loads((tmp_path / "model" / "training.json").read_text())["mlflow_run_id"]
    run = mlflow.get_run(run_id)
    assert len(run.data.tags["data_fingerprint"]) == 64
    assert run.data.params["code/version"] and run.data.params["code/git_commit"]
    # No dropout asked for: the one chosen from the data is logged, kept and used.
    chosen = json.loads((tmp_path / "model" / "training.json").read_text())["hparams"]["dropout"]
    assert 0.2 <= chosen <= 0.7 and run.data.params["dropout"] == str(chosen)
    assert json.loads((tmp_path / "model" / "config.json").read_text())["dropout"] == chosen
    version = mlflow.MlflowClient().get_latest_versions("sasrec-games")[0]
    assert version.run_id == run_id
    pyfunc = mlflow.pyfunc.load_model(f"models:/sasrec-games/{version.version}")
    assert pyfunc.metadata.get_params_schema().to_dict() == [
        {"name": "k", "type": "long", "default": 10, "shape": None}
    ]
    # What the model scores: the artifact's own top items, in original ids.
    artifact = load_model_dir(tmp_path / "model", torch.device("cpu"))
    vocab = pl.read_parquet(tmp_path / "model" / "item_vocab.parquet").sort("item_index")
    histories = [[1, 2, 3, 4], [5, 6, 7, 8]]
    scores = artifact(torch.tensor(histories))
    for row, history in enumerate(histories):
        scores[row, [0, *history]] = float("-inf")
    top = scores.topk(3, dim=1).indices.tolist()
    ids = ["", *vocab["item_id"]]
    answers = pyfunc.predict(
        pd.DataFrame({"history": [[ids[i] for i in h] for h in histories]}), params={"k": 3}
    )
    assert answers["item_ids"].tolist() == [[ids[i] for i in row] for row in top]


def s3_keys(bucket: str, prefix: str = "") -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(entry["Key"] for entry in listed.get("Contents", []))


@pytest.mark.long
def test_checkpoint_on_s3_survives_a_killed_pod_and_resumes_the_same_mlflow_run(
    sequences_dir, tmp_path, mlflow_uri, s3_server
):
    # A preempted pod loses its disk: the checkpoint and the run id live in the bucket only.
    boto3.client("s3").create_bucket(Bucket="checkpoints")
    hparams = HPARAMS | {"max_epochs": 25, "eval_every": 5, "patience": 99}
    checkpoint_dir = "s3://checkpoints/pipeline-run-7/train"
    straight = subprocess.run(
        sasrec_train(sequences_dir, tmp_path / "straight", hparams), capture_output=True
    )
    assert straight.returncode == 0, straight.stderr
    pod = tmp_path / "pod"  # the working directory of the killed "pod"
    pod.mkdir()
    command = sasrec_train(
        sequences_dir, tmp_path / "model", hparams, "--checkpoint-dir", checkpoint_dir
    )
    worker = subprocess.Popen(command, cwd=pod, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and worker.poll() is None:
        if "pipeline-run-7/train/checkpoint.pt" in s3_keys("checkpoints"):
            break
        time.sleep(0.1)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    assert s3_keys("checkpoints") == [
        "pipeline-run-7/train/checkpoint.pt",
        "pipeline-run-7/train/mlflow_run.json",
    ]
    # Nothing of it on local disk: no OUT.checkpoint folder, no folder named "s3:".
    assert not (tmp_path / "model.checkpoint").exists() and not (tmp_path / "model").exists()
    assert list(pod.iterdir()) == []

    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumed from {checkpoint_dir}/checkpoint.pt after epoch" in rerun.stderr
    assert_resumed_in_one_run_like_the_straight_one(tmp_path, epochs=25)
    assert s3_keys("checkpoints") == []  # done: the checkpoint is removed


def test_gpus_without_usable_cuda_fail_at_once_unless_cpu_is_asked_for(sequences_dir, tmp_path):
    failed = subprocess.run(
        sasrec_train(sequences_dir, tmp_path / "m", HPARAMS, "--gpus", "1"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert failed.returncode == 2
    error = failed.stderr.strip().splitlines()[-1]
    assert error.startswith("sasrec train: error: 1 GPU(s) were requested (gpu_count) but CUDA")
    assert "gpu_count=0" in error
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.checkpoint").exists()
    on_cpu = subprocess.run(
        sasrec_train(sequences_dir, tmp_path / "m", HPARAMS | {"device": "cpu", "max_epochs": 1},
                     "--gpus", "1"),
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert on_cpu.returncode == 0, on_cpu.stderr
    assert json.loads((tmp_path / "m" / "training.json").read_text())["device"] == "cpu"


def test_in_a_pod_without_a_tracking_uri_training_refuses_to_start(
    sequences_dir, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    env = os.environ | {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}
    result = subprocess.run(
        sasrec_train(sequences_dir, tmp_path / "m", HPARAMS),
        capture_output=True, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no MLflow tracking URI, and this is a Kubernetes pod" in result.stderr
    assert "mlflow_tracking_uri" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "m").exists()


def test_a_checkpoint_bucket_that_does_not_exist_is_a_one_line_error(
    sequences_dir, tmp_path, mlflow_uri, s3_server
):
    result = subprocess.run(
        sasrec_train(sequences_dir, tmp_path / "m", HPARAMS | {"max_epochs": 1},
                     "--checkpoint-dir", "s3://no-such-bucket/run/train"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("sasrec train: error: cannot write s3://no-such-bucket/run/train/")
    assert "check that the bucket exists and the credentials" in error
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("stop_after", [3, "last"])
def test_an_epoch_stopped_after_a_batch_continues_into_the_same_weights_and_loss(
    sequences_dir, stop_after
):
    from sasrec.training.state import EpochInterrupted

    hparams = parse_hparams(HPARAMS | {"batch_size": 4, "dropout": 0.3, "ema_decay": 0.0})
    sequences = read_sequences(sequences_dir)

    def run_epoch(training, stop_requested=lambda: False, resume_from=None) -> float:
        return train_epoch(
            training.objective.train(), training.state.optimizer, training.sequences,
            training.lengths, hparams, training.state.generator,
            training.state.model.config.num_items, None, resume_from, stop_requested,
            training.state.item_table,
        )  # fmt: skip

    straight = start_training_on(sequences, hparams)
    straight_loss = run_epoch(straight)
    num_batches = -(-len(straight.lengths) // hparams.batch_size)
    stop_at = num_batches if stop_after == "last" else stop_after
    # The same start; the interrupted objects stand for what the checkpoint restores (its
    # round trip through a file is what the SIGTERM tests in test_preemption.py check).
    interrupted = start_training_on(sequences, hparams)
    asked = iter(range(1, num_batches + 1))
    with pytest.raises(EpochInterrupted) as stopped:
        run_epoch(interrupted, lambda: next(asked) == stop_at)
    assert stopped.value.progress.batches_done == stop_at
    resumed_loss = run_epoch(interrupted, resume_from=stopped.value.progress)
    assert resumed_loss == straight_loss
    resumed_state = interrupted.state.model.state_dict()
    for name, tensor in straight.state.model.state_dict().items():
        torch.testing.assert_close(resumed_state[name], tensor, rtol=0, atol=0, msg=name)


def test_training_mixes_in_the_transitions_at_the_weight_validation_prefers(
    sequences_dir, tmp_path
):
    # On a cycle the item after the last one is always the same: counting it is right.
    hparams = parse_hparams(HPARAMS | {"max_epochs": 2})
    train_sasrec(sequences_dir, tmp_path / "model", hparams)
    info = read_json(tmp_path / "model" / "training.json")
    assert info["transition_weight"] > 0
    assert info["hparams"]["transition_weight"] == info["transition_weight"]
    assert info["best_val_ndcg@10"] > info["best_val_ndcg@10_without_transitions"]
    pairs = {
        pair
        for sequence in read_sequences(sequences_dir).train[schema.ITEM_SEQUENCE]
        for pair in itertools.pairwise(sequence)
    }
    model = load_model_dir(tmp_path / "model", torch.device("cpu"))
    assert model.config.num_transitions == len(pairs)
    assert model.transition_weight.item() == pytest.approx(info["transition_weight"])

    alone_hparams = parse_hparams(HPARAMS | {"max_epochs": 2, "transition_weight": 0})
    train_sasrec(sequences_dir, tmp_path / "alone", alone_hparams)
    alone = read_json(tmp_path / "alone" / "training.json")
    assert alone["transition_weight"] == 0.0
    assert alone["best_val_ndcg@10"] == alone["best_val_ndcg@10_without_transitions"]
    assert load_model_dir(tmp_path / "alone", torch.device("cpu")).config.num_transitions == 0
    assert not any(name.startswith("transition") for name in weights(tmp_path / "alone"))
