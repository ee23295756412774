"""Promote component: register the model; move the `champion` alias when it wins."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.images import image_uri


@dsl.component(base_image=image_uri("evaluate"), install_kfp_package=False)
def promote(
    model: Input[Model],
    sequences: Input[Dataset],
    registered_model_name: str,
    promotion_metric: str,
    mlflow_tracking_uri: str,
    promotion: Output[Artifact],
    metrics: Output[Metrics],
):
    """Register a new version; it becomes champion if it beats the champion on test users.

    Args:
        model: The model to register (the sweep's winner).
        sequences: Output of the sequences component: both models are scored on its test users.
        registered_model_name: MLflow registered model; empty: register nothing.
        promotion_metric: Test metric that decides, e.g. ndcg@10; a tie keeps the champion.
        mlflow_tracking_uri: MLflow tracking URI; empty for the one training used.
        promotion: Directory holding promotion.json (the decision and both scores).
        metrics: The decision and both scores, shown in the KFP UI.
    """
    from sasrec.errors import exit_on_error
    from sasrec.registry.steps import promote_step

    with exit_on_error("promote"):
        decision = promote_step(
            model.path, sequences.path, promotion.path, registered_model_name,
            promotion_metric, mlflow_tracking_uri or None,
        )  # fmt: skip
    metrics.log_metric("promoted", float(decision["promoted"]))
    for name in ("challenger_score", "champion_score"):
        if decision[name] is not None:
            metrics.log_metric(f"{name}_{promotion_metric}", decision[name])
    promotion.metadata.update({k: v for k, v in decision.items() if v is not None})
