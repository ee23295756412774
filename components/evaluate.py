"""Evaluate component: ranking metrics over the whole catalogue and the paper's protocol."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.images import image_uri


@dsl.component(base_image=image_uri("evaluate"), install_kfp_package=False)
def evaluate(
    model: Input[Model],
    sequences: Input[Dataset],
    mlflow_tracking_uri: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
):
    """Rank each test user's held-out item; write metrics.json and log to MLflow.

    Args:
        model: Output of the train component.
        sequences: Output of the sequences component.
        mlflow_tracking_uri: MLflow tracking URI; empty for the one training used.
        evaluation: Directory holding metrics.json.
        metrics: The same metrics, shown in the KFP UI.
    """
    from sasrec.steps import evaluate_step

    results = evaluate_step(
        model.path, sequences.path, evaluation.path, mlflow_tracking_uri or None
    )
    for name, value in results.items():
        metrics.log_metric(name, value)
