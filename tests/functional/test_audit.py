"""What an independent audit found (issue 14), each on small hand-made inputs.

Recommendations from whole known sequences, a rerun with other settings in a new MLflow
run, exact resume (cosine schedule, one random state per process, validation data),
sampled negatives outside all of a user's items, finite metrics from a NaN model.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import polars as pl
import pytest
import torch
from test_train import HPARAMS, Interrupted, assert_same_weights, sasrec_train

from sasrec.config import parse_hparams
from sasrec.data import schema
from sasrec.data.sequences import OFFICIAL_T1_MS, OFFICIAL_T2_MS
from sasrec.data.steps import sequences_step
from sasrec.scoring import rank_held_out
from sasrec.serving.recommend import recommend_step
from sasrec.training.checkpoint import load_checkpoint
from sasrec.training.train import train_sasrec

T1, T2 = OFFICIAL_T1_MS, OFFICIAL_T2_MS
BEFORE, BETWEEN, AFTER = T1 - 10_000, T1 + 10_000, T2 + 10_000


def write_interactions(rows: list[tuple[str, str, int]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        [(user, item, time, 5.0, None) for user, item, time in rows],
        schema=schema.INTERACTIONS_SCHEMA,
        orient="row",
    ).write_parquet(path)
    return path


def test_recommendations_exclude_every_known_item_and_reach_every_user(tmp_path):
    # The example: u4 has A before t1 and B between t1 and t2; u5 has A and C, both
    # between. Before: B was recommended back to u4, and u5 got nothing.
    rows = [
        ("u1", "A", BEFORE), ("u1", "B", BEFORE + 1), ("u1", "C", BEFORE + 2),
        ("u1", "D", BETWEEN), ("u1", "E", AFTER),
        ("u2", "B", BEFORE), ("u2", "C", BEFORE + 1), ("u2", "D", BETWEEN), ("u2", "F", AFTER),
        ("u3", "C", BEFORE), ("u3", "D", BEFORE + 1), ("u3", "E", BEFORE + 2),
        ("u3", "F", BEFORE + 3), ("u3", "G", BEFORE + 4),
        ("u4", "A", BEFORE), ("u4", "B", BETWEEN),
        ("u5", "A", BETWEEN), ("u5", "C", BETWEEN + 1),
    ]  # fmt: skip
    interactions = write_interactions(rows, tmp_path / "raw" / "interactions.parquet")
    # --max-len 2 used to cut histories, so u3's C, D and E were "unseen": no more.
    sequences_step(interactions, tmp_path / "seq", kcore=0, split="timestamp")
    hparams = parse_hparams(HPARAMS | {"max_len": 2, "max_epochs": 1, "num_negatives": 2})
    train_sasrec(tmp_path / "seq", tmp_path / "model", hparams)
    summary = recommend_step(tmp_path / "model", tmp_path / "seq", tmp_path / "recs", k=100)
    recommended = pl.read_parquet(tmp_path / "recs" / schema.RECOMMENDATIONS_FILE)
    known: dict[str, set[str]] = {}
    for user, item, _ in rows:
        known.setdefault(user, set()).add(item)
    catalogue = {item for _, item, _ in rows}
    assert summary["num_users"] == 5
    for user, items in known.items():
        got = recommended.filter(pl.col("user_id") == user)["item_id"].to_list()
        assert sorted(got) == sorted(catalogue - items), user  # k covers the whole catalogue


def test_sampled_negatives_are_never_items_of_the_user(tmp_path):
    # One user: history [1, 2], held-out 3, and later items 4..9. The scorer likes the later
    # items best and the held-out item next: drawn among them, the held-out item loses.
    num_items = 12
    held_out = pl.DataFrame(
        {"user_id": ["u"], "history": [[1, 2]], "target": [3]}, schema=schema.HELD_OUT_SCHEMA
    )
    scores = torch.zeros(num_items + 1)
    scores[4:10], scores[3] = 2.0, 1.0

    def scorer(histories: torch.Tensor) -> torch.Tensor:
        return scores.expand(len(histories), -1).clone()

    all_items = pl.Series([list(range(1, 10))], dtype=pl.List(pl.Int32))
    ranks = rank_held_out(scorer, held_out, num_items, max_len=5, seen=all_items)
    assert ranks.sampled.tolist() == [0]  # negatives only among 10, 11, 12
    unaware = rank_held_out(scorer, held_out, num_items, max_len=5)  # history and target only
    assert unaware.sampled.tolist()[0] > 0


@pytest.mark.parametrize("broken", ["all", "target", "others"])
def test_metrics_of_a_model_with_nan_scores_are_finite_and_in_range(broken):
    num_items = 30
    generator = torch.Generator().manual_seed(0)
    held_out = pl.DataFrame(
        {
            "user_id": [f"u{n}" for n in range(20)],
            "history": [[1 + n % 5, 6 + n % 7] for n in range(20)],
            "target": [15 + n % 10 for n in range(20)],
        },
        schema=schema.HELD_OUT_SCHEMA,
    )

    def nan_scorer(histories: torch.Tensor) -> torch.Tensor:
        scores = torch.rand(len(histories), num_items + 1, generator=generator)
        if broken == "all":
            scores[:] = float("nan")
        elif broken == "target":
            scores[:, 15:25] = float("nan")
        else:
            scores[:, :15] = float("nan")
        return scores

    popularity = torch.ones(num_items + 1)
    ranks = rank_held_out(nan_scorer, held_out, num_items, max_len=5, popularity=popularity)
    metrics = ranks.metrics()
    assert metrics  # ndcg, hit, mrr at every K, under the three protocols
    for name, value in metrics.items():
        assert 0.0 <= value <= 1.0, (name, value)
    if broken != "others":  # a NaN target ranks last, among all items and among 101
        assert ranks.full.tolist() == [num_items] * 20
        assert ranks.sampled.tolist() == [100] * 20


def train_until_interrupted(sequences_dir: Path, hparams: dict, checkpoint: Path) -> None:
    def stop_after_epoch_3(metrics: dict, epoch: int) -> None:
        if epoch == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        train_sasrec(
            sequences_dir, checkpoint.parent / "unused", parse_hparams(hparams), None,
            stop_after_epoch_3, checkpoint,
        )  # fmt: skip


def first_epoch_of_rerun(sequences_dir: Path, hparams: dict, checkpoint: Path) -> int:
    epochs: list[int] = []
    train_sasrec(
        sequences_dir, checkpoint.parent / "model", parse_hparams(hparams), None,
        lambda metrics, epoch: epochs.append(epoch), checkpoint,
    )  # fmt: skip
    return epochs[0]


@pytest.mark.parametrize(("schedule", "resumes"), [("cosine", False), ("constant", True)])
def test_a_new_max_epochs_resumes_only_when_no_learning_rate_depends_on_it(
    sequences_dir, tmp_path, schedule, resumes
):
    hparams = HPARAMS | {"lr_schedule": schedule, "max_epochs": 6}
    checkpoint = tmp_path / "ckpt.pt"
    train_until_interrupted(sequences_dir, hparams, checkpoint)
    longer = hparams | {"max_epochs": 8}
    assert first_epoch_of_rerun(sequences_dir, longer, checkpoint) == (3 if resumes else 1)


def test_a_checkpoint_of_other_validation_data_is_not_resumed(sequences_dir, tmp_path):
    checkpoint = tmp_path / "ckpt.pt"
    train_until_interrupted(sequences_dir, HPARAMS, checkpoint)
    valid_path = sequences_dir / schema.VALID_FILE
    pl.read_parquet(valid_path).head(-5).write_parquet(valid_path)  # other users validate
    assert first_epoch_of_rerun(sequences_dir, HPARAMS, checkpoint) == 1


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (torchrun's workers are not in its process group)."""
    listed = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    )
    return [pid, *(p for child in listed.stdout.split() for p in process_tree(int(child)))]


def kill_once_checkpointed(command: list[str], checkpoint: Path) -> int:
    """Start `command`, SIGKILL it and every process it started (as a preempted pod dies)
    once `checkpoint` exists; returns the checkpoint's epoch."""
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and worker.poll() is None and not checkpoint.exists():
        time.sleep(0.05)
    for pid in process_tree(worker.pid):
        os.kill(pid, signal.SIGKILL)
    worker.wait()
    return load_checkpoint(checkpoint, torch.device("cpu"))["epoch"]


def metric_steps(run_id: str, key: str = "train/loss") -> list[int]:
    history = mlflow.MlflowClient().get_metric_history(run_id, key)
    return sorted(metric.step for metric in history)


@pytest.mark.long
def test_a_rerun_with_other_hparams_is_a_new_mlflow_run(sequences_dir, tmp_path, mlflow_uri):
    # Before: the rerun continued the killed job's run, logged no params, and the run had
    # two epochs 1 from two trainings.
    checkpoint_dir = tmp_path / "model.checkpoint"
    first = HPARAMS | {"max_epochs": 300, "eval_every": 100, "patience": 99}
    killed_at = kill_once_checkpointed(
        sasrec_train(sequences_dir, tmp_path / "model", first), checkpoint_dir / "checkpoint.pt"
    )
    killed_run = json.loads((checkpoint_dir / "mlflow_run.json").read_text())["run_id"]
    steps_before = metric_steps(killed_run)
    other = HPARAMS | {"lr": 0.003, "max_epochs": 2}
    rerun = subprocess.run(
        sasrec_train(sequences_dir, tmp_path / "model", other), capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "is of other data or hparams: starting afresh" in rerun.stderr
    new_run = json.loads((tmp_path / "model" / "training.json").read_text())["mlflow_run_id"]
    assert new_run != killed_run
    assert mlflow.get_run(new_run).data.params["lr"] == "0.003"
    assert metric_steps(new_run) == [1, 2]
    assert metric_steps(killed_run) == steps_before  # untouched
    # Metrics are sent by a background thread: the kill may come before any was stored.
    assert killed_at >= 1 and all(step <= killed_at for step in steps_before)
    runs = mlflow.search_runs(experiment_names=["sasrec"], output_format="list")
    assert len(runs) == 2
    assert not checkpoint_dir.exists()  # the finished job removed its own checkpoint


@pytest.mark.long
def test_two_processes_resumed_after_a_kill_equal_an_uninterrupted_pair(
    sequences_dir, tmp_path, mlflow_uri
):
    # Dropout on: each process draws its own masks. Before, a resumed run gave every process
    # rank 0's random state, so the masks coincided and the weights drifted from the pair's.
    hparams = HPARAMS | {"max_epochs": 40, "eval_every": 10, "patience": 99, "dropout": 0.5}
    straight = subprocess.run(
        sasrec_train(sequences_dir, tmp_path / "straight", hparams, "--nproc", "2"),
        capture_output=True,
        text=True,
    )
    assert straight.returncode == 0, straight.stderr
    command = sasrec_train(sequences_dir, tmp_path / "model", hparams, "--nproc", "2")
    checkpoint = tmp_path / "model.checkpoint" / "checkpoint.pt"
    killed_at = kill_once_checkpointed(command, checkpoint)
    assert 1 <= killed_at < 40
    saved = load_checkpoint(checkpoint, torch.device("cpu"))["rng_states"]
    assert len(saved) == 2 and not torch.equal(saved[0]["cpu"], saved[1]["cpu"])
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"after epoch {killed_at}" in rerun.stderr
    assert_same_weights(tmp_path / "straight", tmp_path / "model")
