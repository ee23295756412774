"""Shared fixtures: real data under ../shared/data, a local HTTP server, MLflow."""

import functools
import http.server
import threading
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
