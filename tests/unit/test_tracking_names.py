"""What a user reads in the MLflow UI: short run names, metrics in sections, a landing on runs."""

import pytest

from sasrec import tracking


@pytest.mark.parametrize(
    ("job_name", "trial", "expected"),
    [
        # KFP's local runner, and the same inside a ParallelFor
        ("sasrec-2026-12-07-14-29-53-911554", None, "sasrec 12-07 14:29:53"),
        ("sasrec-2026-12-07-14-29-53-911554/for-loop-1-iteration-0", None, "sasrec 12-07 14:29:53"),
        ("sasrec-pipeline-x7k2p", None, "sasrec-pipeline-x7k2p"),  # a cluster's: short already
        ("sasrec-2026-12-07-14-29-53-911554", 3, "trial 3"),  # under its sweep's run
        (None, None, None),
    ],
)  # fmt: skip
def test_run_names_are_short_enough_for_the_run_table(job_name, trial, expected):
    assert tracking.readable_run_name(job_name, trial) == expected


@pytest.mark.parametrize(
    ("name", "sections", "expected"),
    [
        ("val_ndcg@10", tracking.TRAINING_SECTIONS, "val/ndcg_at_10"),
        ("best_val_hit@10", tracking.TRAINING_SECTIONS, "val/best_hit_at_10"),
        ("train_loss", tracking.TRAINING_SECTIONS, "train/loss"),
        ("epoch_seconds", tracking.TRAINING_SECTIONS, "train/epoch_seconds"),
        ("ndcg@10", tracking.EVALUATION_SECTIONS, "test/ndcg_at_10"),
        ("ndcg@10_ci95", tracking.EVALUATION_SECTIONS, "test/ndcg_at_10_ci95"),
        ("sampled_ndcg@10", tracking.EVALUATION_SECTIONS, "test_sampled/ndcg_at_10"),
        ("popsampled_hit@50", tracking.EVALUATION_SECTIONS, "test_popsampled/hit_at_50"),
        ("val_mrr@5", tracking.EVALUATION_SECTIONS, "val_final/mrr_at_5"),
        ("baseline_popularity_ndcg@10", tracking.EVALUATION_SECTIONS,
         "test_baseline_popularity/ndcg_at_10"),
        ("baseline_transition_sampled_ndcg@10", tracking.EVALUATION_SECTIONS,
         "test_baseline_transition/sampled_ndcg_at_10"),
        ("num_test_users", tracking.EVALUATION_SECTIONS, "test/num_users"),
        ("num_valid_users", tracking.EVALUATION_SECTIONS, "val_final/num_users"),
    ],
)  # fmt: skip
def test_metrics_go_to_their_section_of_the_run_page(name, sections, expected):
    assert tracking.mlflow_key(name, sections) == expected


def test_the_ui_link_opens_on_training_runs_and_shows_no_password():
    link = tracking.ui_link("http://user:secret@mlflow:5000/", "7", "abc")
    assert link == "http://mlflow:5000/#/experiments/7/runs/abc?workflowType=machine_learning"


def test_a_new_experiment_is_tagged_as_model_training_and_an_old_one_gets_the_tag(tmp_path):
    client = tracking.mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    kind = "mlflow.experimentKind"
    created = tracking.training_experiment(client, "fresh")
    assert client.get_experiment(created).tags[kind] == "custom_model_development"
    old = client.create_experiment("made-before")
    assert tracking.training_experiment(client, "made-before") == old
    assert client.get_experiment(old).tags[kind] == "custom_model_development"


def test_an_experiment_kind_the_user_chose_is_left_as_it_is(tmp_path):
    client = tracking.mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    theirs = client.create_experiment("theirs", tags={"mlflow.experimentKind": "genai_development"})
    assert tracking.training_experiment(client, "theirs") == theirs
    assert client.get_experiment(theirs).tags["mlflow.experimentKind"] == "genai_development"
