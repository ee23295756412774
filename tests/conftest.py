"""Shared fixtures: real data under ../shared/data, a local HTTP server, MLflow."""

import functools
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import cyclic_reviews, write_reviews_jsonl_gz

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
AMAZON_SAMPLE = SHARED_DATA / "amazon-reviews-2023-video-games-sample"


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or skip the test when this checkout has none."""
    path = SHARED_DATA / relative
    if not path.is_file():
        pytest.skip(f"real data {path} is absent (a fresh clone has no ../shared/data)")
    return path


@pytest.fixture
def amazon_sample_gz() -> Path:
    """1,000 real Amazon Reviews 2023 Video_Games reviews in the official JSONL.gz layout."""
    return shared_file("amazon-reviews-2023-video-games-sample/Video_Games.jsonl.gz")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests_seen: list[str]

    def log_message(self, format: str, *args: object) -> None:
        del format, args

    def do_GET(self) -> None:
        self.requests_seen.append(self.path)
        super().do_GET()


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A real HTTP server on 127.0.0.1 serving a temporary directory.

    Yields (base URL, served directory, list of requested paths).
    """
    root = tmp_path / "www"
    root.mkdir()
    seen: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests_seen": seen})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root, seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def reviews_gz(tmp_path: Path) -> Path:
    """The real Amazon sample when ../shared/data is present, else synthetic reviews.

    Either way the file has the official layout, so tests using it always run.
    """
    sample = AMAZON_SAMPLE / "Video_Games.jsonl.gz"
    if sample.is_file():
        return sample
    return write_reviews_jsonl_gz(tmp_path / "synthetic" / "Video_Games.jsonl.gz", cyclic_reviews())


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh MLflow sqlite store, set as $MLFLOW_TRACKING_URI and as this process's URI."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # default artifact locations land here, not in the repo
    # An earlier test's mlflow.set_tracking_uri would otherwise outlive it in this process.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(previous)


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_http(url: str, timeout_s: float = 60.0) -> None:
    """Poll `url` until it answers (any HTTP status), or fail the test."""
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout_s:.0f} s")


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 API server on 127.0.0.1, set up as AWS_* variables as a user would for MinIO.

    Yields the endpoint URL; s3fs and boto3 in this process and in subprocesses reach it.
    """
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(endpoint)
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "test-key",
            "AWS_SECRET_ACCESS_KEY": "test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(name, value)
        yield endpoint
    finally:
        server.terminate()
        server.wait()


@pytest.fixture
def sequences_dir(tmp_path: Path) -> Path:
    """Sequences of 80 users walking a cycle of 40 items (the sequences step's output)."""
    from sasrec.data.steps import download_step, sequences_step

    source = write_reviews_jsonl_gz(tmp_path / "cyclic.jsonl.gz", cyclic_reviews())
    download_step(str(source), tmp_path / "raw", cache_dir=tmp_path / "cache")
    sequences_step(tmp_path / "raw" / "interactions.parquet", tmp_path / "seq", kcore=0)
    return tmp_path / "seq"


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1 over an sqlite store and an artifact folder.

    `kill` stops it as a crashed pod would (SIGKILL to its whole process group); `start`
    brings it back on the same port and store.
    """

    def __init__(self, root: Path, env: dict[str, str] | None = None, app: str = "") -> None:
        self.root, self.port, self.app = root, free_port(), app
        self.env = os.environ | (env or {})
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        command = [
            str(Path(sys.executable).with_name("mlflow")), "server",
            f"--backend-store-uri=sqlite:///{self.root / 'mlflow.db'}",
            f"--artifacts-destination={self.root / 'artifacts'}", "--serve-artifacts",
            "--host=127.0.0.1", f"--port={self.port}", "--workers=1",
            *([f"--app-name={self.app}"] if self.app else []),
        ]  # fmt: skip
        log_file = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            command, cwd=self.root, env=self.env, stdout=log_file, stderr=log_file,
            start_new_session=True,
        )  # fmt: skip
        wait_for_http(f"{self.uri}/health", timeout_s)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A started `mlflow server` of this test's own (its store in tmp_path/mlflow-server)."""
    root = tmp_path / "mlflow-server"
    root.mkdir()
    server = MlflowServer(root)
    server.start()
    yield server
    server.kill()
