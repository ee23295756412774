"""The evaluate step: metrics, breakdowns and the report, logged to the model's MLflow run."""

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sasrec import tracking
from sasrec.io import read_json
from sasrec.storage import redact

if TYPE_CHECKING:  # torch is imported by the steps that use it: see above
    pass


log = logging.getLogger(__name__)


def evaluate_step(
    model_dir: str | Path,
    sequences_dir: str | Path,
    out_dir: str | Path,
    tracking_uri: str | None = None,
    exclude_history: bool = True,
    promotion_dir: str | Path | None = None,
    score_dirs: list[str | Path] | None = None,
) -> dict[str, float]:
    """Evaluate the model and the baselines; log metrics and report to the model's MLflow run.

    Writes metrics.json, breakdowns.csv and report.html into `out_dir`; with
    `promotion_dir` (the promote step's output) the report shows its decision; with
    `score_dirs` (every scoring shard's output) the ranks are merged from them.
    """
    from sasrec.data.schema import PROMOTION_FILE
    from sasrec.evaluation.evaluate import evaluate_model
    from sasrec.model_dir import read_training_info

    promotion = read_json(Path(promotion_dir) / PROMOTION_FILE) if promotion_dir else None
    metrics = evaluate_model(
        model_dir, sequences_dir, out_dir, exclude_history=exclude_history, promotion=promotion,
        score_dirs=score_dirs,
    )  # fmt: skip
    info = read_training_info(model_dir)
    run_id, uri = info.get("mlflow_run_id"), tracking_uri or info.get("mlflow_tracking_uri")
    if run_id and tracking.run_exists(uri, run_id):
        with (
            tracking.registry_errors(uri, f"log the evaluation to MLflow run {run_id}"),
            tracking.mlflow_run(uri, run_id=run_id),
        ):
            tracking.log_metrics_once(metrics, tracking.EVALUATION_SECTIONS)
            tracking.log_artifacts(Path(out_dir), "evaluation")
    elif run_id:
        # The metrics are in metrics.json and KFP; losing them after training would be worse.
        log.warning(
            "MLflow run %s of this model is not in the store %s: test metrics not logged to "
            "MLflow; give every step the same tracking URI (a shared MLflow server)",
            run_id,
            redact(tracking.resolve_tracking_uri(uri)),
        )
    return metrics


def scoring_shards(count: int) -> list[int]:
    """The shard numbers 0..count - 1 that the pipeline's scoring fans out over.

    Raises:
        SASRecError: when count is below 1.
    """
    from sasrec.errors import SASRecError

    if count < 1:
        raise SASRecError(f"scoring_shards must be at least 1, got {count}")
    return list(range(count))


def score_step(
    model_dir: str | Path,
    sequences_dir: str | Path,
    out_dir: str | Path,
    shard: int,
    shards: int,
) -> dict[str, int]:
    """Rank one shard's held-out items, for the evaluate step to merge."""
    from sasrec.evaluation.evaluate import score_shard

    return score_shard(model_dir, sequences_dir, out_dir, shard, shards)
