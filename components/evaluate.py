"""Evaluate component: model and baselines on the whole catalogue and the sampled protocols."""

from typing import List  # noqa: UP035 - KFP reads the annotation of a collected input

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.images import image_uri


@dsl.component(base_image=image_uri("evaluate"), install_kfp_package=False)
def evaluate(
    model: Input[Model],
    sequences: Input[Dataset],
    promotion: Input[Artifact],
    scores: Input[List[Dataset]],  # noqa: UP006
    mlflow_tracking_uri: str,
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
):
    """Merge the shards' ranks into metrics, breakdowns and the report; log them to MLflow.

    Args:
        model: Output of the train component.
        sequences: Output of the sequences component.
        promotion: Output of the promote component: its decision heads the report.
        scores: Every shard's output of the score_users component.
        mlflow_tracking_uri: MLflow tracking URI; empty for the one training used.
        evaluation: Directory holding metrics.json, breakdowns.csv and report.html.
        metrics: The same metrics, shown in the KFP UI.
        report: The HTML report (tables, plots, example users), shown in the KFP UI.
    """
    import shutil
    from pathlib import Path

    from sasrec.data.schema import REPORT_FILE
    from sasrec.errors import exit_on_error
    from sasrec.evaluation.step import evaluate_step

    with exit_on_error("evaluate"):
        results = evaluate_step(
            model.path,
            sequences.path,
            evaluation.path,
            mlflow_tracking_uri or None,
            promotion_dir=promotion.path,
            score_dirs=[shard.path for shard in scores],
        )
    for name, value in results.items():
        metrics.log_metric(name, value)
    shutil.copyfile(Path(evaluation.path) / REPORT_FILE, report.path)
