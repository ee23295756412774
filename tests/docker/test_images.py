"""The step images on a real Docker engine: `make test-docker` builds them, then this runs
the pipeline with docker compose and with KFP's DockerRunner on the Amazon Reviews 2023
sample served from 127.0.0.1, and checks what the MLflow server holds."""

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from components.images import STEPS, default_tag, image_uri
from conftest import shared_file

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
HPARAMS = {"max_epochs": 3, "eval_every": 1}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def amazon_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The official layout (raw/review_categories/<Category>.jsonl.gz) on 127.0.0.1."""
    sample = shared_file("amazon-reviews-2023-video-games-sample/Video_Games.jsonl.gz")
    root = tmp_path_factory.mktemp("mirror")
    (root / "raw" / "review_categories").mkdir(parents=True)
    shutil.copyfile(sample, root / "raw" / "review_categories" / "Video_Games.jsonl.gz")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def compose_env(amazon_mirror: str) -> Iterator[dict[str, str]]:
    """Environment of the make targets: a project and MLflow port of this test's own."""
    project = f"sasrectest{os.getpid()}"
    env = {
        **os.environ,
        "COMPOSE_PROJECT": project,
        "MLFLOW_PORT": str(_free_port()),
        "SASREC_AMAZON_BASE_URL": amazon_mirror,
        "KCORE": "0",
        "HPARAMS": json.dumps(HPARAMS),
    }
    yield env
    subprocess.run(["make", "-s", "compose-down", "ARGS=--volumes"], cwd=REPO, env=env, check=True)


def _make(target: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["make", target, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _runs(tracking_uri: str) -> list:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("sasrec")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])


def _assert_complete_run(tracking_uri: str, run) -> None:
    """Per-epoch validation, test metrics from the evaluate step, a loadable model."""
    client = MlflowClient(tracking_uri)
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val/ndcg_at_10")
    assert [m.step for m in history] == [1, 2, 3]
    assert 0.0 <= run.data.metrics["test/ndcg_at_10"] <= 1.0
    assert "test_baseline_popularity/ndcg_at_10" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"model_dir", "evaluation"}
    (model,) = run.outputs.model_outputs
    mlflow.set_tracking_uri(tracking_uri)
    recommender = mlflow.pyfunc.load_model(f"models:/{model.model_id}")
    example = recommender.input_example  # three items of the catalogue
    (answer,) = recommender.predict(example, params={"k": 5}).to_dict("records")
    assert answer["source"] == "sasrec" and len(answer["item_ids"]) == 5
    assert not set(answer["item_ids"]) & set(example["history"][0])


@pytest.mark.parametrize("step", STEPS)
def test_images_run_as_non_root_with_labels_and_no_secrets(step: str) -> None:
    image = image_uri(step)
    info = json.loads(subprocess.check_output(["docker", "image", "inspect", image]))[0]
    config = info["Config"]
    assert config["User"] not in ("", "0", "root")
    assert config["Labels"]["org.opencontainers.image.title"] == f"sasrec-{step}"
    assert config["Labels"]["org.opencontainers.image.version"]
    assert not [v for v in config["Env"] if any(s in v for s in ("TOKEN", "PASSWORD", "KEY="))]
    assert config["User"] == "10001:0"  # non-root, in group 0 as OpenShift expects
    uid = subprocess.check_output(["docker", "run", "--rm", image, "id", "-u"], text=True)
    assert int(uid) != 0
    # Rebuilt code gets a new tag: the source digest is part of it.
    assert image.endswith(f":{default_tag()}") and len(default_tag().rsplit("-", 1)[1]) == 12
    host_certs = [p.name for p in Path("/usr/local/share/ca-certificates").glob("*.crt")]
    if host_certs:  # the proxy's certificates of the build machine stay out of the image
        names = [arg for name in host_certs for arg in ("-o", "-name", name)][1:]
        found = subprocess.run(
            ["docker", "run", "--rm", "--user", "0", image, "find", "/", "-xdev", "(", *names, ")"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert found.returncode == 0 and found.stdout.strip() == ""
    has_torch = subprocess.run(
        ["docker", "run", "--rm", image, "python3", "-c", "import torch"], capture_output=True
    )
    assert (has_torch.returncode == 0) == (step in ("train", "evaluate"))


def test_compose_then_docker_runner_log_complete_runs_to_the_mlflow_server(
    compose_env: dict[str, str], tmp_path: Path
) -> None:
    tracking_uri = f"http://127.0.0.1:{compose_env['MLFLOW_PORT']}"
    compose_files = "-f docker/compose.yaml -f tests/docker/compose.host-network.yaml"
    result = _make("compose-run", compose_env, f"COMPOSE_FILES={compose_files}")
    assert f"MLflow UI: http://localhost:{compose_env['MLFLOW_PORT']}" in result.stdout
    (compose_run,) = _runs(tracking_uri)
    _assert_complete_run(tracking_uri, compose_run)

    out = tmp_path / "docker-run"
    _make("run-docker", compose_env, f"ARGS=--kcore 0 --output-dir {out} --register-as games "
          "--hparams " + json.dumps(json.dumps(HPARAMS)))  # fmt: skip
    first, docker_run = _runs(tracking_uri)
    assert first.info.run_id == compose_run.info.run_id
    _assert_complete_run(tracking_uri, docker_run)
    # The locked-down containers (uid 54321:0, read-only root) logged the baked revision.
    assert docker_run.data.tags["mlflow.source.git.commit"] == _revision()
    metrics = json.loads((out / "metrics.json").read_text())
    assert docker_run.data.metrics["test/ndcg_at_10"] == pytest.approx(metrics["ndcg@10"])
    assert (out / "evaluation" / "report.html").stat().st_size > 10_000
    # The promote task (evaluate image, locked down) registered the model as champion.
    champion = MlflowClient(tracking_uri).get_model_version_by_alias("games", "champion")
    assert champion.run_id == docker_run.info.run_id


def _locked(requirements: Path) -> dict[str, str]:
    lines = [line for line in requirements.read_text().splitlines() if "==" in line]
    return dict(line.lower().split("==", 1) for line in lines)


@pytest.mark.parametrize("step", STEPS)
def test_images_hold_exactly_the_locked_packages_and_their_revision(step: str) -> None:
    image = image_uri(step)
    lock = _locked(REPO / "docker" / "requirements" / f"{_extras(step)}.txt")
    frozen = subprocess.check_output(
        ["docker", "run", "--rm", image, "pip", "freeze", "--all", "--exclude", "sasrec"],
        text=True,
    )
    installed = {
        name.replace("_", "-"): version.split("+")[0]  # torch 2.13.0+cpu is the lock's 2.13.0
        for name, version in (line.lower().split("==", 1) for line in frozen.split())
    }
    assert {name: installed.get(name) for name in lock} == lock
    env = subprocess.check_output(
        ["docker", "run", "--rm", image, "printenv", "SASREC_GIT_COMMIT"], text=True
    )
    assert env.strip() == _revision()


def _revision() -> str:
    """What `make images` bakes into the images as SASREC_GIT_COMMIT."""
    return subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=40"], cwd=REPO,
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def _extras(step: str) -> str:
    return "train" if step in ("train", "evaluate") else "base"


@pytest.mark.parametrize("step", STEPS)
def test_images_work_as_an_arbitrary_uid_with_a_read_only_root_and_no_home(step: str) -> None:
    # What each step imports and writes first: matplotlib's cache, the download cache, a
    # temporary directory; torch and mlflow where the image has them.
    script = (
        "import matplotlib.pyplot, tempfile, pathlib, sasrec.cli;"
        "from sasrec.data.download import default_cache_dir;"
        "d = default_cache_dir(); d.mkdir(parents=True); (d / 'x').write_text('x');"
        "tempfile.mkdtemp(); print(d)"
    )
    if step in ("train", "evaluate"):
        script += ";import torch, mlflow"
    result = subprocess.run(
        ["docker", "run", "--rm", "--user", "54321:0", "--read-only", "--tmpfs", "/tmp",
         "-e", "HOME=/", image_uri(step), "python3", "-c", script],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "/tmp/sasrec-cache"


def test_steps_of_one_lock_share_the_layer_of_their_packages() -> None:
    """The virtual environment is one layer that download and sequences (and train and
    evaluate) hold in common: a build keeps one copy of torch on disk, not two."""

    def layers(step: str) -> list[str]:
        info = json.loads(subprocess.check_output(["docker", "image", "inspect", image_uri(step)]))
        return info[0]["RootFS"]["Layers"]

    for first, second in (("download", "sequences"), ("train", "evaluate")):
        shared = [a for a, b in zip(layers(first), layers(second), strict=False) if a == b]
        # The base image's layer, the user's, the virtual environment's.
        assert len(shared) >= 3 and shared == layers(first)[: len(shared)]
    assert layers("download")[2] != layers("train")[2]  # the two locks differ


def _docker_build(tag: str, dockerfile: str) -> str:
    """Build a tiny image from `dockerfile` text, tagged `tag`; its id."""
    return subprocess.run(
        ["docker", "build", "--quiet", "-t", tag, "-"], input=dockerfile,
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def _exists(image: str) -> bool:
    return (
        subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
    )


def test_prune_images_removes_older_builds_of_this_project_and_nothing_else() -> None:
    registry = f"localhost/prunetest{os.getpid()}"
    env = {**os.environ, "IMAGE_REGISTRY": registry, "IMAGE_TAG": "current"}
    named = [(step, f"{registry}/sasrec-{step}:current") for step in STEPS]
    kept = [name for _, name in named]
    named += [("download", f"{registry}/sasrec-download:0.0.9-older"),
              ("train", f"{registry}/sasrec-train:old")]  # fmt: skip
    older = [name for _, name in named[len(kept) :]]
    for step, name in named:  # names for the images built: no disk of their own
        subprocess.run(["docker", "tag", image_uri(step), name], check=True)
    # A dangling build stage of this project, and a dangling image of someone else's.
    label = "org.opencontainers.image.source=https://github.com/sasrec-kubeflow/sasrec"

    def tiny(name: str, labels: str, build: int) -> str:
        dockerfile = f"FROM python:3.11-slim\nLABEL {labels} prunetest.build={build}\n"
        return _docker_build(f"{registry}/{name}:x", dockerfile)

    ours, theirs = tiny("stage", label, 1), tiny("other", "other=1", 1)
    for name, labels in (("stage", label), ("other", "other=1")):
        tiny(name, labels, 2)  # built again under the same name: the first build dangles
    try:
        result = _make("prune-images", env)
        assert [name for name in kept + older if _exists(name)] == kept
        assert not _exists(ours) and _exists(theirs) and _exists(f"{registry}/other:x")
        assert all(_exists(image_uri(step)) for step in STEPS)  # other names: untouched
        assert "sasrec-download:0.0.9-older" in result.stdout
    finally:
        names = [name for name in kept + older if _exists(name)]
        subprocess.run(["docker", "rmi", *names, f"{registry}/stage:x", f"{registry}/other:x",
                        theirs], capture_output=True)  # fmt: skip
