"""`make submit`: arguments checked against the compiled pipeline, then sent by the real kfp
client to a stand-in for the KFP API server on 127.0.0.1 that records what it receives."""

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipelines.compile import compile_pipeline
from pipelines.submit import SubmitError, main, parse_arguments, pipeline_parameters


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_pipeline(tmp_path_factory.mktemp("compiled") / "pipeline.yaml")


class KfpApiHandler(http.server.BaseHTTPRequestHandler):
    """The four KFP v2beta1 calls a submission makes: health, find/create experiment, run."""

    received: list[tuple[str, str, dict]]

    def log_message(self, format: str, *args: object) -> None:
        del format, args

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.received.append(("GET", self.path, {}))
        if self.path.startswith("/apis/v2beta1/healthz"):
            self._answer({"multi_user": False})
        else:  # experiments list: none yet
            self._answer({"experiments": [], "total_size": 0})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(("POST", self.path, body))
        if self.path.startswith("/apis/v2beta1/experiments"):
            self._answer({"experiment_id": "exp-1", "display_name": body["display_name"]})
        else:
            self._answer({"run_id": "run-1", "display_name": body["display_name"]})


@pytest.fixture
def kfp_api() -> Iterator[tuple[str, list]]:
    received: list[tuple[str, str, dict]] = []
    handler = type("Handler", (KfpApiHandler,), {"received": received})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()


def test_parameters_are_read_from_the_compiled_pipeline(package: Path) -> None:
    parameters = pipeline_parameters(package)
    assert parameters["source"] == "STRING"
    assert parameters["gpu_count"] == "NUMBER_INTEGER"
    assert parameters["hparams"] == "STRUCT"
    assert parameters["train_tolerations"] == "LIST"
    assert parameters["write_recommendations"] == "BOOLEAN"


def test_arguments_are_typed_by_the_pipeline(package: Path) -> None:
    arguments = parse_arguments(
        [
            "source=amazon2023:Books",
            "gpu_count=4",
            'hparams={"loss": "ce", "max_epochs": 20}',
            "write_recommendations=false",
            'train_tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]',
        ],
        pipeline_parameters(package),
    )
    assert arguments == {
        "source": "amazon2023:Books",
        "gpu_count": 4,
        "hparams": {"loss": "ce", "max_epochs": 20},
        "write_recommendations": False,
        "train_tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
    }


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("gpu_cont=2", "no such parameter; it has "),
        ("gpu_count=two", "not valid JSON"),
        ("gpu_count=2.5", "expected a NUMBER_INTEGER value"),
        ("gpu_count=true", "expected a NUMBER_INTEGER value"),
        ("hparams=[1]", "expected a STRUCT value"),
        ("source", "expected NAME=VALUE"),
    ],
)
def test_bad_arguments_are_refused(package: Path, assignment: str, message: str) -> None:
    with pytest.raises(SubmitError, match=message):
        parse_arguments([assignment], pipeline_parameters(package))


def test_submit_sends_the_compiled_spec_and_arguments(
    package: Path, kfp_api: tuple[str, list], capsys: pytest.CaptureFixture
) -> None:
    host, received = kfp_api
    argv = ["--host", host, "--package", str(package), "--experiment", "games"]
    argv += ["--run-name", "nightly", "--param", "kcore=10", "--param", "gpu_type=nvidia.com/mig"]
    argv += ["--param", "checkpoint_root=s3://mlpipeline/ckpt", "--param", "train_memory=32Gi"]
    argv += ["--param", "mlflow_secret=team-mlflow"]
    assert main(argv) == 0
    assert "submitted run run-1" in capsys.readouterr().out
    experiment = next(body for method, path, body in received if path.endswith("/experiments"))
    assert experiment["display_name"] == "games"
    run = next(body for method, path, body in received if path.startswith("/apis/v2beta1/runs"))
    assert run["display_name"] == "nightly"
    assert run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"] == {
        "kcore": 10,
        "gpu_type": "nvidia.com/mig",
        "checkpoint_root": "s3://mlpipeline/ckpt",
        "train_memory": "32Gi",
        "mlflow_secret": "team-mlflow",
    }
    compiled, platform = yaml.safe_load_all(package.read_text())
    assert run["pipeline_spec"]["pipeline_spec"]["root"] == compiled["root"]
    assert run["pipeline_spec"]["platform_spec"] == platform


def test_a_bad_argument_sends_nothing(package: Path, kfp_api: tuple[str, list]) -> None:
    host, received = kfp_api
    assert main(["--host", host, "--package", str(package), "--param", "kcore=five"]) == 2
    assert received == []


def test_no_host_and_no_package_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KFP_HOST", raising=False)
    assert main(["--package", str(tmp_path / "missing.yaml")]) == 2
    assert "pass --host or set KFP_HOST" in capsys.readouterr().err
    assert main(["--host", "http://127.0.0.1:9", "--package", str(tmp_path / "x.yaml")]) == 2
    assert "run make compile-pipeline" in capsys.readouterr().err
