"""Champion/challenger promotion against a real MLflow registry (sqlite store)."""

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import polars as pl
import pytest
import torch

from helpers import cyclic_reviews, write_reviews_jsonl_gz
from sasrec.config import parse_hparams
from sasrec.data.steps import download_step, sequences_step
from sasrec.errors import SASRecError
from sasrec.evaluation.step import evaluate_step
from sasrec.model_dir import load_model_dir
from sasrec.registry.lease import registry_lease
from sasrec.registry.promotion import CatalogueMapped, catalogue_mapping
from sasrec.registry.steps import plan_trials_step, promote_step
from sasrec.registry.versions import register_run_model
from sasrec.training.step import train_step

pytestmark = pytest.mark.slow

# The model alone: on the cycle of these sequences the transitions mixed in would rank
# every model's next item first, and the models must differ in quality here.
BASE = {"eval_every": 1, "batch_size": 16, "dropout": 0.1, "lr": 0.01, "transition_weight": 0}
BARELY_TRAINED = BASE | {"max_epochs": 1, "hidden_size": 8, "lr": 1e-5}
HALF_TRAINED = BASE | {"max_epochs": 3, "hidden_size": 16}
WELL_TRAINED = BASE | {"max_epochs": 40, "eval_every": 10, "hidden_size": 32}


def train(sequences_dir: Path, model_dir: Path, hparams: dict) -> Path:
    train_step(sequences_dir, model_dir, parse_hparams(hparams))
    return model_dir


def champion_version() -> str:
    return str(mlflow.MlflowClient().get_model_version_by_alias("games", "champion").version)


def test_first_becomes_champion_a_worse_one_does_not_move_it_a_better_one_does(
    sequences_dir, tmp_path, mlflow_uri
):
    models = {
        name: train(sequences_dir, tmp_path / name, hparams)
        for name, hparams in (
            ("half", HALF_TRAINED), ("barely", BARELY_TRAINED), ("well", WELL_TRAINED)
        )
    }  # fmt: skip
    # What the evaluate step measures for each, independently of the promote step.
    tested = {
        name: evaluate_step(model_dir, sequences_dir, tmp_path / f"eval-{name}")["ndcg@10"]
        for name, model_dir in models.items()
    }
    assert tested["barely"] < tested["half"] < tested["well"]  # the scenario holds

    first = promote_step(models["half"], sequences_dir, tmp_path / "p1", "games")
    assert (first["decision"], first["version"], first["promoted"]) == ("first champion", "1", True)
    assert champion_version() == "1"

    second = promote_step(models["barely"], sequences_dir, tmp_path / "p2", "games")
    assert (second["decision"], second["version"], second["promoted"]) == (
        "kept champion", "2", False
    )  # fmt: skip
    assert champion_version() == "1"
    assert second["challenger_score"] == pytest.approx(tested["barely"])
    assert second["champion_score"] == pytest.approx(tested["half"])
    tags = mlflow.MlflowClient().get_model_version("games", "2").tags
    assert tags["promotion.decision"] == "kept champion"
    assert float(tags["promotion.champion_score"]) == pytest.approx(tested["half"])

    third = promote_step(models["well"], sequences_dir, tmp_path / "p3", "games")
    assert (third["decision"], third["version"], third["promoted"]) == ("promoted", "3", True)
    assert third["champion_version"] == "1"
    assert third["challenger_score"] == pytest.approx(tested["well"])
    assert champion_version() == "3"

    # A retried step registers nothing new: the version is found by its MLflow run.
    again = promote_step(models["well"], sequences_dir, tmp_path / "p4", "games")
    assert (again["decision"], again["version"]) == ("already champion", "3")
    assert len(mlflow.MlflowClient().search_model_versions("name='games'")) == 3


def test_an_unknown_metric_is_refused_before_anything_is_registered(
    sequences_dir, tmp_path, mlflow_uri
):
    model_dir = train(sequences_dir, tmp_path / "model", HALF_TRAINED)
    with pytest.raises(SASRecError, match="promotion metric 'ndcg@11' is not a test metric"):
        promote_step(model_dir, sequences_dir, tmp_path / "p", "games", metric="ndcg@11")
    assert mlflow.MlflowClient().search_registered_models() == []
    assert not (tmp_path / "p").exists()
    with pytest.raises(SASRecError, match="promotion metric 'ndcg@11'"):  # before training
        plan_trials_step({}, [], promotion_metric="ndcg@11")


def test_no_name_registers_nothing(sequences_dir, tmp_path, mlflow_uri):
    model_dir = train(sequences_dir, tmp_path / "model", HALF_TRAINED)
    decision = promote_step(model_dir, sequences_dir, tmp_path / "promotion", None)
    assert decision["decision"] == "not registered" and not decision["promoted"]
    assert mlflow.MlflowClient().search_registered_models() == []
    assert (tmp_path / "promotion" / "promotion.json").is_file()


def test_a_champion_of_another_catalogue_is_scored_through_item_ids(
    sequences_dir, tmp_path, mlflow_uri
):
    champion = train(sequences_dir, tmp_path / "champion", WELL_TRAINED)
    assert promote_step(champion, sequences_dir, tmp_path / "p1", "games")["promoted"]
    # New data: the same users walk a longer cycle, so 20 items are new to the champion.
    source = write_reviews_jsonl_gz(tmp_path / "longer.jsonl.gz", cyclic_reviews(num_items=60))
    download_step(str(source), tmp_path / "raw2", cache_dir=tmp_path / "cache")
    sequences_step(tmp_path / "raw2" / "interactions.parquet", tmp_path / "seq2", kcore=0)
    challenger = train(tmp_path / "seq2", tmp_path / "challenger", WELL_TRAINED)
    decision = promote_step(challenger, tmp_path / "seq2", tmp_path / "p2", "games")
    tested = evaluate_step(challenger, tmp_path / "seq2", tmp_path / "eval")["ndcg@10"]
    assert decision["challenger_score"] == pytest.approx(tested)
    assert 0.0 < decision["champion_score"] < 1.0  # it knows most items: not a zero
    assert decision["promoted"] == (decision["challenger_score"] > decision["champion_score"])


def test_catalogue_mapping_scores_items_by_id(sequences_dir, tmp_path, mlflow_uri):
    model_dir = train(sequences_dir, tmp_path / "model", HALF_TRAINED)
    model = load_model_dir(model_dir, torch.device("cpu"))
    theirs = pl.read_parquet(model_dir / "item_vocab.parquet")
    # Ours: their items in reverse order, and two they never saw.
    ids = [*reversed(theirs["item_id"].to_list()), "NEW1", "NEW2"]
    ours = pl.DataFrame({"item_index": range(1, len(ids) + 1), "item_id": ids},
                        schema={"item_index": pl.Int32, "item_id": pl.String})  # fmt: skip
    scorer = CatalogueMapped(model, catalogue_mapping(ours, theirs))
    their_index = dict(zip(theirs["item_id"], theirs["item_index"], strict=True))
    our_index = {item: i for i, item in enumerate(ids, start=1)}
    history_ids = ["B0003", "NEW1", "B0004", "B0005"]
    ours_history = torch.tensor([[0, *(our_index[i] for i in history_ids)]])
    theirs_history = torch.tensor(
        [[0, 0, *(their_index[i] for i in history_ids if i in their_index)]]
    )
    with torch.no_grad():
        mapped, direct = scorer(ours_history)[0].tolist(), model(theirs_history)[0].tolist()
    for item in ids:
        if item in their_index:
            assert mapped[our_index[item]] == pytest.approx(direct[their_index[item]], abs=1e-5)
        else:
            assert mapped[our_index[item]] == float("-inf")


@pytest.mark.server
def test_promotion_against_an_mlflow_server_downloads_the_champion(
    sequences_dir, tmp_path, mlflow_server, monkeypatch
):
    # Training logs the model through the server's artifact proxy; the promote step
    # fetches the champion back the same way, as pods with no shared disk do.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(mlflow_server.uri)
    first = train(sequences_dir, tmp_path / "first", HALF_TRAINED)
    second = train(sequences_dir, tmp_path / "second", WELL_TRAINED)
    assert promote_step(first, sequences_dir, tmp_path / "p1", "games")["promoted"]
    decision = promote_step(second, sequences_dir, tmp_path / "p2", "games")
    tested = evaluate_step(first, sequences_dir, tmp_path / "eval")["ndcg@10"]
    assert decision["champion_score"] == pytest.approx(tested)
    assert decision["decision"] == "promoted" and champion_version() == "2"


def test_a_champion_of_an_earlier_release_is_scored_from_its_run(
    sequences_dir, tmp_path, mlflow_uri
):
    # Earlier releases registered MLflow's PyTorch flavour; the model directory was a run
    # artifact beside it.
    old = train(sequences_dir, tmp_path / "old", WELL_TRAINED)
    run_id = json.loads((old / "training.json").read_text())["mlflow_run_id"]
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            load_model_dir(old, torch.device("cpu")), name="pytorch", serialization_format="pickle"
        )
    client = mlflow.MlflowClient()
    client.create_registered_model("games")
    client.create_model_version("games", info.model_uri, run_id, model_id=info.model_id)
    client.set_registered_model_alias("games", "champion", "1")
    new = train(sequences_dir, tmp_path / "new", BARELY_TRAINED)
    decision = promote_step(new, sequences_dir, tmp_path / "p", "games")
    tested = evaluate_step(old, sequences_dir, tmp_path / "eval")["ndcg@10"]
    assert decision["champion_score"] == pytest.approx(tested)
    assert decision["decision"] == "kept champion" and champion_version() == "1"


def promote_in_a_process(model: Path, sequences_dir: Path, out: Path, uri: str) -> subprocess.Popen:
    """The promote step as a pipeline's task runs it: a process of its own."""
    code = (
        "import logging, sys\nlogging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "from sasrec.registry.steps import promote_step\n"
        f"promote_step({str(model)!r}, {str(sequences_dir)!r}, {str(out)!r}, 'games', "
        f"tracking_uri={uri!r})\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, bufsize=1
    )


@pytest.fixture
def three_models_and_a_champion(sequences_dir, tmp_path, mlflow_server, monkeypatch):
    """barely (version 1, champion), half and well trained, all on a real `mlflow server`."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(mlflow_server.uri)
    models = {
        name: train(sequences_dir, tmp_path / name, hparams)
        for name, hparams in (
            ("barely", BARELY_TRAINED), ("half", HALF_TRAINED), ("well", WELL_TRAINED)
        )
    }  # fmt: skip
    assert promote_step(models["barely"], sequences_dir, tmp_path / "p0", "games")["promoted"]
    return models


@pytest.mark.server
def test_a_champion_moved_while_a_run_scored_is_scored_again_before_the_alias_moves(
    three_models_and_a_champion, sequences_dir, tmp_path, mlflow_server
):
    models = three_models_and_a_champion
    client = mlflow.MlflowClient(mlflow_server.uri)
    with registry_lease(client, "games"):  # another run is promoting
        half = promote_in_a_process(
            models["half"], sequences_dir, tmp_path / "p1", mlflow_server.uri
        )
        for line in half.stderr:  # half has scored against version 1 and waits for the lease
            if "waiting for the promotion lease" in line:
                break
        # ... and that run moves the alias to the better model meanwhile.
        info = json.loads((models["well"] / "training.json").read_text())
        well = register_run_model(mlflow_server.uri, "games", info["mlflow_run_id"])
        client.set_registered_model_alias("games", "champion", well)
    assert half.wait(timeout=300) == 0, half.stderr.read()
    decision = json.loads((tmp_path / "p1" / "promotion.json").read_text())
    assert decision["decision"] == "kept champion" and decision["champion_version"] == well
    assert decision["challenger_score"] < decision["champion_score"]
    assert champion_version() == well


@pytest.mark.server
def test_two_runs_promoting_at_once_leave_the_better_model_champion(
    three_models_and_a_champion, sequences_dir, tmp_path, mlflow_server
):
    models = three_models_and_a_champion
    runs = {
        name: promote_in_a_process(models[name], sequences_dir, tmp_path / f"p-{name}",
                                   mlflow_server.uri)
        for name in ("half", "well")
    }  # fmt: skip
    for name, process in runs.items():
        assert process.wait(timeout=300) == 0, (name, process.stderr.read())
    decisions = {
        name: json.loads((tmp_path / f"p-{name}" / "promotion.json").read_text()) for name in runs
    }
    assert champion_version() == decisions["well"]["version"]
    assert decisions["well"]["promoted"]
    # half either won against version 1 first and lost the alias to well, or lost to well.
    if decisions["half"]["promoted"]:
        assert decisions["well"]["champion_version"] == decisions["half"]["version"]
    else:
        assert decisions["half"]["champion_version"] == decisions["well"]["version"]
