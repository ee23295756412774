"""Multi-node training as a Kubeflow TrainJob: its manifest, and following it to its end.

The manifest is checked against the TrainJob CRD's schema (tests/cluster); the launcher
runs with the real `kubernetes` client against a plain HTTP server speaking the API paths
it uses (tests/fake_kubernetes.py). The training on two nodes itself is
test_train.py::test_two_nodes_of_one_process_train_the_weights_of_one_node_of_two.
"""

import logging
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from fake_kubernetes import Cluster, FakeKubernetes, condition, trainjob_problems
from sasrec.errors import SASRecError
from sasrec.training.preemption import Preempted
from sasrec.training.trainjob import (
    NodeResources,
    TrainJobRequest,
    run_trainjob,
    secret_env,
    train_on_nodes,
    trainjob_manifest,
    trainjob_name,
)

NAMESPACE = "kubeflow-user"


def request(**changes) -> TrainJobRequest:
    fields = {
        "name": trainjob_name("3f2a9c1e-77b0-4c0e-9d1b-5a6e0c2f8b41", trial=2),
        "namespace": NAMESPACE,
        "image": "ghcr.io/example/sasrec-train:1.0",
        "nodes": 2,
        "processes_per_node": 4,
        "args": ["train-node", "--sequences", "s3://b/seq", "--out", "s3://b/model"],
        "resources": NodeResources(cpu="8", memory="32Gi", gpus=4),
        "env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"},
                *secret_env("sasrec-mlflow", ("MLFLOW_TRACKING_TOKEN",))],
    }  # fmt: skip
    return TrainJobRequest(**fields | changes)


def test_the_manifest_is_a_valid_trainjob_for_the_torch_runtime():
    manifest = trainjob_manifest(request())
    assert trainjob_problems(manifest) == []
    spec = manifest["spec"]
    assert spec["runtimeRef"]["name"] == "torch-distributed"
    assert (spec["trainer"]["numNodes"], spec["trainer"]["numProcPerNode"]) == (2, 4)
    assert spec["trainer"]["resourcesPerNode"]["limits"] == {
        "cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 4
    }  # fmt: skip
    assert spec["trainer"]["command"] + spec["trainer"]["args"][:1] == [
        "python", "-m", "sasrec.cli", "train-node"
    ]  # fmt: skip
    secret = spec["trainer"]["env"][1]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "sasrec-mlflow", "key": "MLFLOW_TRACKING_TOKEN", "optional": True}


def test_the_schema_check_refuses_what_the_api_server_would():
    manifest = trainjob_manifest(request())
    manifest["spec"]["trainer"]["numNode"] = 2  # a typo: unknown field
    manifest["spec"]["trainer"]["resourcesPerNode"]["limits"]["cpu"] = "8 cores"
    manifest["metadata"]["name"] = "Sasrec_Run"
    problems = trainjob_problems(manifest)
    assert any("numNode" in p for p in problems)
    assert any("resourcesPerNode.limits.cpu" in p for p in problems)
    assert "metadata.name must match RFC 1035 DNS label format" in problems


@pytest.mark.parametrize("run_id", ["3f2a9c1e-77b0-4c0e-9d1b-5a6e0c2f8b41", "", "X" * 200])
def test_trainjob_names_are_rfc_1035_labels_of_the_run_and_trial(run_id):
    manifest = trainjob_manifest(request(name=trainjob_name(run_id, trial=13)))
    assert trainjob_problems(manifest) == []
    assert manifest["metadata"]["name"].endswith("-t13")


def trainjob_path(name: str) -> str:
    return f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NAMESPACE}/trainjobs/{name}"


def test_a_completed_trainjob_is_followed_with_its_log_then_deleted(caplog):
    cluster = Cluster(statuses=[{}, {}, condition("Complete")], log_lines=["epoch 1", "done"])
    manifest = trainjob_manifest(request())
    with FakeKubernetes(cluster) as kube, caplog.at_level(logging.INFO):
        run_trainjob(kube.api_client(), manifest, poll_seconds=0.05)
    assert cluster.created == [manifest]
    assert cluster.reads == 3
    assert [m for _, m in [(r.levelname, r.getMessage()) for r in caplog.records]
            if m.startswith("[node 0]")] == ["[node 0] epoch 1", "[node 0] done"]  # fmt: skip
    assert cluster.deleted == [{"propagationPolicy": "Foreground"}]
    assert cluster.trainjobs == {}


def test_a_failed_trainjob_fails_with_its_message_and_is_deleted():
    cluster = Cluster(statuses=[{}, condition("Failed", "node 1 exited with code 1")])
    with FakeKubernetes(cluster) as kube, pytest.raises(SASRecError) as failed:
        run_trainjob(kube.api_client(), trainjob_manifest(request()), poll_seconds=0.05)
    assert str(failed.value).endswith("failed: node 1 exited with code 1")
    assert f"TrainJob {NAMESPACE}/" in str(failed.value)
    assert len(cluster.deleted) == 1 and cluster.trainjobs == {}


def test_a_retried_task_follows_the_trainjob_it_finds_instead_of_creating_another():
    manifest = trainjob_manifest(request())
    cluster = Cluster(statuses=[condition("Complete")])
    cluster.trainjobs[manifest["metadata"]["name"]] = manifest  # an earlier attempt's
    with FakeKubernetes(cluster) as kube:
        run_trainjob(kube.api_client(), manifest, poll_seconds=0.05)
    assert cluster.created == [] and len(cluster.deleted) == 1


def test_a_forbidden_create_names_the_rbac_to_apply_and_deletes_nothing():
    cluster = Cluster(create_status=403)
    with FakeKubernetes(cluster) as kube, pytest.raises(SASRecError) as refused:
        run_trainjob(kube.api_client(), trainjob_manifest(request()), poll_seconds=0.05)
    assert "HTTP 403" in str(refused.value) and "deploy/trainjob-rbac.yaml" in str(refused.value)
    assert [method for method, _ in cluster.requests] == ["POST"]


def test_sigterm_while_following_deletes_the_trainjob_and_stops():
    cluster = Cluster(statuses=[{}])  # never ends
    manifest = trainjob_manifest(request())
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    with FakeKubernetes(cluster) as kube, pytest.raises(Preempted):
        timer.start()
        run_trainjob(kube.api_client(), manifest, poll_seconds=0.05)
    assert cluster.reads >= 2 and len(cluster.deleted) == 1
    assert ("DELETE", trainjob_path(manifest["metadata"]["name"])) in cluster.requests


def test_train_on_nodes_stages_the_input_fetches_the_model_and_removes_only_its_own_files(
    tmp_path,
):
    """The nodes are played by `on_create`: they read the staged sequences, write a model."""
    sequences = tmp_path / "sequences"
    sequences.mkdir()
    (sequences / "train.parquet").write_bytes(b"rows")
    checkpoint = tmp_path / "shared" / "run-1" / "train-0"
    checkpoint.mkdir(parents=True)
    (checkpoint / "teammate.txt").write_text("not ours")

    def nodes(manifest: dict) -> None:
        args = manifest["spec"]["trainer"]["args"]
        staged, model = (
            Path(args[args.index("--sequences") + 1]),
            Path(args[args.index("--out") + 1]),
        )
        assert (staged / "train.parquet").read_bytes() == b"rows"
        assert args[args.index("--") + 1 :] == ["--hparams", "{}"]
        shutil.copytree(staged, model / "inputs")  # anything the nodes write
        (model / "training.json").write_text('{"epochs_run": 3}')

    cluster = Cluster(statuses=[condition("Complete")], on_create=nodes)
    with FakeKubernetes(cluster) as kube:
        summary = train_on_nodes(
            sequences, tmp_path / "model", str(checkpoint),
            request(args=["--hparams", "{}"]), kube.api_client(), poll_seconds=0.05,
        )  # fmt: skip
    assert summary == {"epochs_run": 3}
    assert (tmp_path / "model" / "inputs" / "train.parquet").read_bytes() == b"rows"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["teammate.txt"]


def test_train_on_nodes_needs_a_checkpoint_folder_every_node_reaches(tmp_path):
    with pytest.raises(SASRecError, match="train_nodes above 1 needs checkpoint_root"):
        train_on_nodes(tmp_path, tmp_path / "model", None, request(), api_client=None)


def test_the_shipped_role_grants_every_call_the_launcher_makes():
    """Each (verb, resource) the fake API server saw, for a whole run, is in deploy/'s Role."""
    import yaml

    role = next(yaml.safe_load_all((REPO_ROOT / "deploy" / "trainjob-rbac.yaml").read_text()))
    granted = {
        (verb, f"{group}/{resource}" if group else resource)
        for rule in role["rules"] for group in rule["apiGroups"]
        for resource in rule["resources"] for verb in rule["verbs"]
    }  # fmt: skip
    cluster = Cluster(statuses=[{}, condition("Complete")], log_lines=["x"])
    with FakeKubernetes(cluster) as kube:
        run_trainjob(kube.api_client(), trainjob_manifest(request()), poll_seconds=0.05)
    verbs = {"POST": "create", "DELETE": "delete"}
    used = set()
    for method, path in cluster.requests:
        parts = path.strip("/").split("/")
        if parts[0] == "apis":  # /apis/<group>/<version>/namespaces/<ns>/<resource>[/<name>]
            resource, named = f"{parts[1]}/{parts[5]}", len(parts) > 6
        else:  # /api/v1/namespaces/<ns>/pods[/<name>[/log]]
            resource, named = "pods/log" if parts[-1] == "log" else "pods", len(parts) > 5
        verb = verbs.get(method) or ("get" if named else "list")
        used.add((verb, resource))
    assert used == {("create", "trainer.kubeflow.org/trainjobs"),
                    ("get", "trainer.kubeflow.org/trainjobs"),
                    ("delete", "trainer.kubeflow.org/trainjobs"),
                    ("list", "pods"), ("get", "pods/log")}  # fmt: skip
    assert used <= granted
