"""The registered model served over HTTP on 127.0.0.1: `mlflow models serve` and MLServer.

Both answer in original item ids, as `sasrec recommend --history` does for the same model,
and answer a malformed request with 4xx and a message.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import polars as pl
import pytest
import requests

from conftest import free_port
from sasrec.config import parse_hparams
from sasrec.serving.deploy import prepare_mlserver
from sasrec.serving.recommend import recommend_for_history
from sasrec.serving.recommender import Recommender
from sasrec.training.step import train_step

HPARAMS = {"max_epochs": 40, "eval_every": 10, "hidden_size": 32, "dropout": 0.1, "lr": 0.01,
           "batch_size": 16}  # fmt: skip
MODEL_NAME = "games"
REPO = Path(__file__).resolve().parents[2]
MLSERVER_BIN = REPO / ".venv-mlserver" / "bin"
# Histories as a client sends them: the cycle's items, one unknown id, none known, empty.
HISTORIES = [["B0005", "B0006"], ["NOPE", "B0012"], ["NOPE1", "NOPE2"], []]


@pytest.fixture
def champion(sequences_dir, tmp_path, mlflow_uri) -> Path:
    """A model trained on the cycle, registered as version 1 with the alias champion."""
    model_dir = tmp_path / "model"
    train_step(sequences_dir, model_dir, parse_hparams(HPARAMS), registered_model_name=MODEL_NAME)
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", "1")
    return model_dir


def start_server(command: list[str], ready_url: str, log: Path, bin_dir: Path) -> subprocess.Popen:
    env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(
        command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if requests.get(ready_url, timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.kill()
    pytest.fail(f"{command[0]} did not get ready: {log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, 9)
    server.wait()


def expected(model_dir: Path, k: int) -> list[dict]:
    return [recommend_for_history(model_dir, history, k, device="cpu") for history in HISTORIES]


def assert_same_answers(answers: list[dict], model_dir: Path, k: int) -> None:
    """Equal to the CLI's answers, history excluded, unknown ids reported, popular fallback."""
    for answer, wanted, history in zip(answers, expected(model_dir, k), HISTORIES, strict=True):
        assert answer["item_ids"] == wanted["item_ids"]
        assert answer["scores"] == pytest.approx(wanted["scores"], rel=1e-5)
        assert answer["unknown_ids"] == [i for i in history if i.startswith("NOPE")]
        assert not set(answer["item_ids"]) & set(history)
    assert answers[0]["item_ids"][0] == "B0007"  # the cycle's next item, after B0005, B0006
    assert [a["source"] for a in answers] == ["sasrec", "sasrec", "popularity", "popularity"]
    # A history of unknown ids gets the most popular training items, scored by their counts.
    train = pl.read_parquet(model_dir.parent / "seq" / "train.parquet")
    counts = train["item_sequence"].explode().value_counts(name="count")
    vocab = pl.read_parquet(model_dir / "item_vocab.parquet")
    top_counts = sorted(counts["count"].to_list(), reverse=True)[:k]
    assert answers[2]["scores"] == [float(c) for c in top_counts]
    by_index = dict(zip(vocab["item_id"], vocab["item_index"], strict=True))
    count_of = dict(zip(counts["item_sequence"], counts["count"], strict=True))
    assert [count_of[by_index[i]] for i in answers[2]["item_ids"]] == top_counts


def test_logged_model_unpickles_nothing(champion):
    files = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL_NAME}@champion"))
    assert not [p for p in files.rglob("*") if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    flavor = json.loads(json.dumps(mlflow.models.Model.load(files).flavors["python_function"]))
    assert flavor["model_code_path"].endswith("serving_model.py")
    assert "python_model" not in flavor  # a pickled PythonModel would be named here


@pytest.mark.slow
def test_mlflow_models_serve_answers_in_original_ids(champion, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(
        [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
         f"models:/{MODEL_NAME}@champion", "--env-manager", "local", "-h", "127.0.0.1",
         "-p", str(port)],
        f"{url}/ping", tmp_path / "serve.log", Path(sys.executable).parent,
    )  # fmt: skip
    try:
        records = [{"history": history} for history in HISTORIES]
        answer = requests.post(
            f"{url}/invocations", json={"dataframe_records": records, "params": {"k": 5}}
        )
        assert answer.status_code == 200, answer.text
        assert_same_answers(answer.json()["predictions"], champion, 5)
        for body, message in (
            ({"dataframe_records": [{"history": ["B0001"]}], "params": {"k": 0}}, "k must be"),
            ({"dataframe_records": [{"history": "B0001"}]}, "must be a list of item ids"),
            ({"dataframe_records": [{"history": [1, 2]}]}, "must hold item id strings"),
            (
                {"dataframe_records": [{"hist": ["B0001"]}]},
                "needs a 'history' column (item ids, "
                'oldest first), got none it knows; e.g. {"dataframe_records"',
            ),
        ):
            bad = requests.post(f"{url}/invocations", json=body)
            assert bad.status_code == 400 and message in bad.json()["message"], bad.text
        not_json = requests.post(
            f"{url}/invocations", data="{", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 400
    finally:
        stop(server)


def v2_request(histories: list[list[str]], k: int) -> dict:
    """A V2 inference request: one `history` input, each row a JSON list (content type pd_json)."""
    return {
        "inputs": [{
            "name": "history", "datatype": "BYTES", "shape": [len(histories), 1],
            "parameters": {"content_type": "pd_json"}, "data": [json.dumps(h) for h in histories],
        }],
        "parameters": {"k": k},
    }  # fmt: skip


def v2_answers(response: dict) -> list[dict]:
    """The V2 outputs (one per column, JSON-encoded lists) back into one dict per row."""
    columns = {
        output["name"]: [
            json.loads(v) if output["parameters"]["content_type"] == "pd_json" else v
            for v in output["data"]
        ]
        for output in response["outputs"]
    }
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


@pytest.mark.slow
@pytest.mark.skipif(not MLSERVER_BIN.is_dir(), reason="no .venv-mlserver: run `make mlserver-env`")
def test_mlserver_mlflow_runtime_answers_v2_in_original_ids(champion, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v2/models/sasrec"
    settings = prepare_mlserver(f"models:/{MODEL_NAME}@champion", tmp_path / "mlserver", "sasrec",
                                port)  # fmt: skip
    server = start_server(
        [str(MLSERVER_BIN / "mlserver"), "start", str(settings)], f"{url}/ready",
        tmp_path / "mlserver.log", MLSERVER_BIN,
    )  # fmt: skip
    try:
        metadata = requests.get(url).json()
        assert [i["name"] for i in metadata["inputs"]] == ["history"]
        answer = requests.post(f"{url}/infer", json=v2_request(HISTORIES, 5))
        assert answer.status_code == 200, answer.text
        assert_same_answers(v2_answers(answer.json()), champion, 5)
        bad_k = requests.post(f"{url}/infer", json=v2_request([["B0001"]], 0))
        assert bad_k.status_code == 400 and "k must be" in bad_k.json()["error"]
        not_a_list = v2_request([], 5) | {"inputs": [{
            "name": "history", "datatype": "BYTES", "shape": [1, 1], "data": ["B0001"],
        }]}  # fmt: skip
        bad_history = requests.post(f"{url}/infer", json=not_a_list)
        assert bad_history.status_code == 400, bad_history.text
        assert "must be a list of item ids" in bad_history.json()["error"]
        assert requests.post(f"{url}/infer", json={"inputs": "x"}).status_code == 422
    finally:
        stop(server)


def test_a_batch_of_histories_is_one_forward_pass(champion):
    recommender = Recommender(champion)
    batches = []
    recommender.model.register_forward_hook(lambda _, inputs, __: batches.append(inputs[0].shape))
    answers = recommender.recommend(HISTORIES, k=3)
    assert batches == [(2, 2)]  # the two readable histories, padded to the longer: one pass
    single = [recommender.recommend([history], k=3)[0] for history in HISTORIES]
    assert [a["item_ids"] for a in answers] == [a["item_ids"] for a in single]


def test_serving_the_last_run_without_one_says_what_to_do(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "sasrec.serving.last_run", str(tmp_path / "outputs")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().startswith("sasrec serve: error: no model of a local run in ")
    assert "make serve MODEL=models:/NAME@champion" in result.stderr
