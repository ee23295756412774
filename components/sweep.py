"""Sweep components: the trials of a hyperparameter grid, and the winner of them."""

from typing import List  # noqa: UP035 - KFP reads the annotation of a collected input

from kfp import dsl
from kfp.dsl import Input, Model, Output

from components.images import image_uri


@dsl.component(base_image=image_uri("train"), install_kfp_package=False)
def plan_trials(
    hparams: dict,
    hparams_grid: list,
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    mlflow_run_name: str,
    promotion_metric: str,
    pipeline_run_id: str,
) -> list:
    """One trial per override object of the grid, over hparams; an empty grid is one trial.

    Args:
        hparams: Hyperparameter overrides shared by every trial.
        hparams_grid: Override objects, one per trial.
        mlflow_tracking_uri: MLflow tracking URI; empty for $MLFLOW_TRACKING_URI or the default.
        mlflow_experiment: MLflow experiment of the sweep's parent run.
        mlflow_run_name: Name of the sweep's parent run.
        promotion_metric: Checked before anything trains (the promote step uses it).
        pipeline_run_id: The pipeline run: a tag on the parent run.

    Returns:
        [{"trial": i, "hparams": {...}, "parent_run_id": "..."}, ...]
    """
    from sasrec.errors import exit_on_error
    from sasrec.registry.steps import plan_trials_step

    with exit_on_error("plan-trials"):
        return plan_trials_step(
            hparams, hparams_grid, mlflow_tracking_uri or None, mlflow_experiment,
            mlflow_run_name, promotion_metric, pipeline_run_id,
        )  # fmt: skip


@dsl.component(base_image=image_uri("train"), install_kfp_package=False)
def select_trial(
    models: Input[List[Model]],  # noqa: UP006
    mlflow_tracking_uri: str,
    model: Output[Model],
):
    """Copy the trial with the best validation NDCG@10 (never test) to `model`.

    Args:
        models: Every trial's model directory.
        mlflow_tracking_uri: MLflow tracking URI; empty for the one training used.
        model: The winner's model directory, with trials.json listing every trial.
    """
    from sasrec.errors import exit_on_error
    from sasrec.registry.steps import select_trial_step

    with exit_on_error("select-trial"):
        summary = select_trial_step(
            [trial.path for trial in models], model.path, mlflow_tracking_uri or None
        )
    model.metadata.update(summary)
