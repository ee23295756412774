"""Credentials as a Kubernetes secret would give them (environment variables) and inside
URIs: the pipeline runs against an MLflow server that demands a login, and none of them
appears in any output, log line, MLflow record or KFP metadata."""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from mlflow import MlflowClient

from conftest import MlflowServer
from sasrec import tracking
from sasrec.errors import SASRecError

pytestmark = [pytest.mark.slow, pytest.mark.server]

ADMIN_PASSWORD = "admin-pw-SECRET-1"
TOKEN = "token-SECRET-2"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """`mlflow server --app-name basic-auth`: every request needs a user and password."""
    env = {"MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLFLOW_FLASK_SERVER_SECRET_KEY": "k"}
    server = MlflowServer(tmp_path_factory.mktemp("auth-server"), env, app="basic-auth")
    server.start(timeout_s=180)
    yield server
    server.kill()


def test_refused_credentials_are_not_taken_for_a_missing_run(auth_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(SASRecError, match="check the credentials") as raised:
        tracking.run_exists(auth_server.uri, "0" * 32)
    assert "wrong" not in str(raised.value)


def test_no_credential_reaches_any_output(
    auth_server, http_server, reviews_gz, tmp_path, monkeypatch
):
    base_url, root, _ = http_server
    (root / "raw" / "review_categories").mkdir(parents=True)
    shutil.copy(reviews_gz, root / "raw" / "review_categories" / "Video_Games.jsonl.gz")
    server_address = auth_server.uri.removeprefix("http://")
    env = os.environ | {
        # What the pipeline's mlflow_secret puts into the tasks' environment:
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD,
        "MLFLOW_TRACKING_TOKEN": TOKEN,
        # Credentials inside URIs, as users also write them (MLflow then sends these):
        "MLFLOW_TRACKING_URI": f"http://admin:{ADMIN_PASSWORD}@{server_address}",
        "SASREC_AMAZON_BASE_URL": base_url,
        "HOME": str(tmp_path / "home"),
    }
    hparams = {"max_epochs": 2, "eval_every": 1, "hidden_size": 16}
    result = subprocess.run(
        [sys.executable, "-m", "sasrec.cli", "run", "--kcore", "0", "--hparams",
         json.dumps(hparams)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    training = json.loads((tmp_path / "outputs" / "model" / "training.json").read_text())
    assert training["mlflow_tracking_uri"] == auth_server.uri  # the login part dropped
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    run = MlflowClient(auth_server.uri).get_run(training["mlflow_run_id"])
    assert run.info.status == "FINISHED" and "test/ndcg_at_10" in run.data.metrics

    secrets = (ADMIN_PASSWORD, TOKEN)
    outputs = [p for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    outputs += [auth_server.root / "mlflow.db", *(auth_server.root / "artifacts").rglob("*")]
    assert len(outputs) > 20
    for path in outputs:
        if path.is_file():
            data = path.read_bytes()
            assert not [s for s in secrets if s.encode() in data], path
    for stream in (result.stdout, result.stderr):
        assert not [s for s in secrets if s in stream]
