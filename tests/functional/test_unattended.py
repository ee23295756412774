"""Safe to leave running: nothing deleted that a run did not write, damaged checkpoints,
the same validation users for every trial, an unloadable champion, one-line failures."""

import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import boto3
import mlflow
import pytest
import torch

from conftest import free_port
from sasrec.config import parse_hparams
from sasrec.data import schema
from sasrec.errors import SASRecError, ServiceUnavailable
from sasrec.evaluation.step import evaluate_step
from sasrec.inputs import read_sequences
from sasrec.io import read_json
from sasrec.registry.steps import promote_step
from sasrec.registry.sweep import plan_trials
from sasrec.serving.deploy import prepare_mlserver
from sasrec.training.step import train_step
from sasrec.training.train import start_training_on, train_sasrec

HPARAMS = {"max_epochs": 3, "eval_every": 1, "hidden_size": 16, "batch_size": 16}


class Interrupted(Exception):
    pass


def stop_after_epoch_2(metrics: dict, epoch: int) -> None:
    if epoch == 2:
        raise Interrupted


# 1. A run removes only what it wrote.


def test_a_finished_run_leaves_everything_else_in_a_shared_checkpoint_folder(
    sequences_dir, tmp_path, mlflow_uri
):
    shared = tmp_path / "shared_ckpts"
    (shared / "other-run").mkdir(parents=True)
    (shared / "other-run" / "checkpoint.pt").write_bytes(b"a neighbour's checkpoint")
    (shared / "README").write_text("kept by the team\n")
    train_step(sequences_dir, tmp_path / "model", parse_hparams(HPARAMS), checkpoint_dir=shared)
    assert (tmp_path / "model" / "model.pt").is_file()
    assert (shared / "other-run" / "checkpoint.pt").read_bytes() == b"a neighbour's checkpoint"
    assert (shared / "README").read_text() == "kept by the team\n"
    assert sorted(p.name for p in shared.iterdir()) == ["README", "other-run"]


def test_a_checkpoint_folder_of_its_own_is_removed_once_empty(sequences_dir, tmp_path, mlflow_uri):
    train_step(sequences_dir, tmp_path / "model", parse_hparams(HPARAMS))
    assert not (tmp_path / "model.checkpoint").exists()


@pytest.mark.long
def test_a_finished_run_leaves_a_teammates_objects_under_the_same_s3_prefix(
    sequences_dir, tmp_path, mlflow_uri, s3_server
):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="team")
    neighbours = {"ckpts/teammate/checkpoint.pt": b"theirs", "ckpts/README": b"readme"}
    for key, body in neighbours.items():
        s3.put_object(Bucket="team", Key=key, Body=body)
    train_step(
        sequences_dir, tmp_path / "model", parse_hparams(HPARAMS), checkpoint_dir="s3://team/ckpts"
    )
    listed = s3.list_objects_v2(Bucket="team")["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(neighbours)
    for key, body in neighbours.items():
        assert s3.get_object(Bucket="team", Key=key)["Body"].read() == body


# 8. A checkpoint that cannot be read: a warning, removed, a fresh start.


def _damaged(kind: str, good: bytes) -> bytes:
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "empty":
        return b""
    buffer = io.BytesIO()
    torch.save({"epoch": 1, "model": {}}, buffer)  # a dict without most keys
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["truncated", "empty", "missing keys"])
def test_a_damaged_checkpoint_is_removed_and_training_starts_afresh(
    sequences_dir, tmp_path, caplog, kind
):
    hparams = parse_hparams(HPARAMS)
    train_sasrec(sequences_dir, tmp_path / "straight", hparams)
    checkpoint = tmp_path / "ckpt.pt"
    with pytest.raises(Interrupted):
        train_sasrec(sequences_dir, tmp_path / "x", hparams, None, stop_after_epoch_2, checkpoint)
    checkpoint.write_bytes(_damaged(kind, checkpoint.read_bytes()))
    epochs = []
    with caplog.at_level(logging.WARNING):
        train_sasrec(
            sequences_dir, tmp_path / "model", hparams, None,
            lambda metrics, epoch: epochs.append(epoch), checkpoint,
        )  # fmt: skip
    assert f"checkpoint {checkpoint} cannot be read" in caplog.text
    assert epochs == [1, 2, 3]  # from the start
    straight = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    fresh = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    for name, tensor in straight.items():
        torch.testing.assert_close(fresh[name], tensor, rtol=0, atol=0)


# 6. Every trial is validated on the same users.


def test_every_seed_validates_on_the_same_users(sequences_dir):
    sequences = read_sequences(sequences_dir)
    valid_users = [
        start_training_on(sequences, parse_hparams(HPARAMS | {"seed": seed, "max_val_users": 20}))
        .valid[schema.USER_ID]
        .to_list()
        for seed in (1, 2, 3)
    ]
    assert len(valid_users[0]) == 20 < sequences.valid.height
    assert valid_users[0] == valid_users[1] == valid_users[2]


def test_a_grid_over_max_val_users_is_refused_before_anything_trains():
    with pytest.raises(SASRecError, match="varies max_val_users"):
        plan_trials({}, [{"max_val_users": 100}, {"max_val_users": 200}])
    assert len(plan_trials({"max_val_users": 100}, [{"seed": 1}, {"seed": 2}])) == 2


# 7. A champion that cannot be loaded.


def test_a_champion_whose_files_are_gone_yields_and_evaluation_runs(
    sequences_dir, tmp_path, mlflow_uri
):
    for name in ("first", "second"):
        train_step(sequences_dir, tmp_path / name, parse_hparams(HPARAMS | {"seed": len(name)}))
    promote_step(tmp_path / "first", sequences_dir, tmp_path / "p1", "games")
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("games", "champion")
    assert str(champion.version) == "1"
    # The champion's artifacts vanish (a cleaned bucket, a lost volume).
    model_id = champion.source.removeprefix("models:/")
    location = Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    run_artifacts = Path(client.get_run(champion.run_id).info.artifact_uri.removeprefix("file://"))
    for folder in (location, run_artifacts):
        assert folder.is_dir(), folder
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    decision = promote_step(tmp_path / "second", sequences_dir, tmp_path / "p2", "games")
    assert decision["decision"] == "replaced an unloadable champion"
    assert decision["champion_version"] == "1" and decision["champion_error"]
    assert str(client.get_model_version_by_alias("games", "champion").version) == "2"
    metrics = evaluate_step(
        tmp_path / "second", sequences_dir, tmp_path / "eval", promotion_dir=tmp_path / "p2"
    )
    assert "ndcg@10" in metrics
    assert "could not be loaded" in (tmp_path / "eval" / "report.html").read_text()


# 9. deploy touches its target only once the model is found, and never a foreign folder.


def test_deploy_with_a_wrong_model_uri_leaves_the_earlier_deployment(tmp_path, mlflow_uri):
    target = tmp_path / "mlserver"
    (target / "model").mkdir(parents=True)
    (target / "model" / "MLmodel").write_text("earlier model\n")
    (target / "settings.json").write_text("{}\n")
    (target / "model-settings.json").write_text("{}\n")
    with pytest.raises(SASRecError, match="cannot fetch the model"):
        prepare_mlserver("runs:/" + "0" * 32 + "/model", target, "sasrec", 5001)
    assert (target / "model" / "MLmodel").read_text() == "earlier model\n"
    assert (target / "settings.json").read_text() == "{}\n"


@pytest.mark.parametrize("own", ["notes.txt", "model/weights.bin"])
def test_deploy_refuses_a_folder_holding_files_of_its_own(tmp_path, mlflow_uri, own):
    target = tmp_path / "mine"
    (target / own).parent.mkdir(parents=True)
    (target / own).write_text("mine\n")
    with pytest.raises(SASRecError, match="did not write"):
        prepare_mlserver("models:/anything/1", target, "sasrec", 5001)
    assert (target / own).read_text() == "mine\n"


# 10. Every object-store and registry failure is one line without credentials.


def _step_in_subprocess(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", **env},
    )  # fmt: skip


def test_an_unreachable_registry_is_one_line_without_the_password(sequences_dir, tmp_path):
    train_sasrec(sequences_dir, tmp_path / "model", parse_hparams(HPARAMS))
    info = read_json(tmp_path / "model" / "training.json")
    (tmp_path / "model" / "training.json").write_text(
        json.dumps(info | {"mlflow_run_id": "0" * 32})
    )
    uri = f"http://alice:pw-SECRET@127.0.0.1:{free_port()}"  # nothing listens there
    code = (
        "from sasrec.errors import exit_on_error\nfrom sasrec.registry.steps import promote_step\n"
        "with exit_on_error('promote'):\n"
        f"    promote_step({str(tmp_path / 'model')!r}, {str(sequences_dir)!r}, "
        f"{str(tmp_path / 'promotion')!r}, 'games', tracking_uri={uri!r})\n"
    )
    done = _step_in_subprocess(code, {})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "pw-SECRET" not in done.stderr + done.stdout
    assert "127.0.0.1" in lines[0] and "did not answer" in lines[0]
    assert not (tmp_path / "promotion").exists()


def test_an_unreachable_object_store_is_one_line(sequences_dir, tmp_path, mlflow_uri):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "sasrec.cli", "train", "--sequences", str(sequences_dir),
         "--out", str(tmp_path / "model"), "--hparams", json.dumps(HPARAMS),
         "--checkpoint-dir", "s3://team/ckpts/run-1"],
        capture_output=True, text=True, timeout=300, env={**__import__("os").environ, **env},
    )  # fmt: skip
    assert done.returncode == 2
    error_lines = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "s3://team/ckpts/run-1/checkpoint.pt" in error_lines[0]
    assert "did not answer" in error_lines[0]


def test_an_object_store_error_is_told_from_a_refusal():
    from sasrec import storage

    def fail(err: Exception, uri: str) -> SASRecError:
        try:
            with storage.explained(uri, "read"):
                raise err
        except SASRecError as explained:
            return explained
        raise AssertionError("not explained")

    unreachable = fail(ConnectionRefusedError("refused"), "s3://b/k")
    assert isinstance(unreachable, ServiceUnavailable) and "did not answer" in str(unreachable)
    refused = fail(PermissionError("denied"), "s3://alice:pw@b/k")
    assert not isinstance(refused, ServiceUnavailable)
    assert "check that the bucket exists" in str(refused) and "pw" not in str(refused)


# 5. The pipeline's exit task ends the runs a failure left RUNNING, and only those.


def test_close_runs_ends_only_this_pipeline_runs_left_running(mlflow_uri):
    from sasrec.registry.steps import close_runs_step
    from sasrec.tracking import PIPELINE_RUN_TAG

    client = mlflow.MlflowClient()
    experiment = client.create_experiment("sasrec")

    def run(pipeline: str, finished: bool) -> str:
        run_id = client.create_run(experiment, tags={PIPELINE_RUN_TAG: pipeline}).info.run_id
        if finished:
            client.set_terminated(run_id, "FINISHED")
        return run_id

    left, done, other = run("p-1", False), run("p-1", True), run("p-2", False)
    assert close_runs_step(None, "sasrec", "p-1", "FAILED") == [left]
    status = {r: client.get_run(r).info.status for r in (left, done, other)}
    assert status == {left: "FAILED", done: "FINISHED", other: "RUNNING"}
    assert close_runs_step(None, "sasrec", "p-2", "SUCCEEDED") == [other]
    assert client.get_run(other).info.status == "KILLED"
