"""The four pipeline steps, each one call: what the CLI and the KFP components run.

Modules that need torch are imported inside the steps that use them: the download and
sequences images carry no torch.
"""

import dataclasses
import logging
from pathlib import Path
from typing import Any

from sasrec import tracking
from sasrec.config import HParams
from sasrec.data import schema
from sasrec.data.download import DEFAULT_CACHE_DIR, download_interactions
from sasrec.data.sequences import build_sequences
from sasrec.io import read_json

log = logging.getLogger(__name__)


def download_step(
    source: str,
    out_dir: str | Path,
    amazon_base_url: str | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
) -> dict[str, int]:
    """Fetch `source` and write `out_dir/interactions.parquet`."""
    out_path = Path(out_dir) / schema.INTERACTIONS_FILE
    return download_interactions(source, out_path, amazon_base_url, cache_dir)


def sequences_step(
    interactions_path: str | Path, out_dir: str | Path, kcore: int = 5
) -> dict[str, Any]:
    """Build the sequence files and stats.json in `out_dir`."""
    return build_sequences(interactions_path, out_dir, kcore)


def train_step(
    sequences_dir: str | Path,
    model_dir: str | Path,
    hparams: HParams,
    tracking_uri: str | None = None,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    run_name: str | None = None,
) -> dict[str, Any]:
    """Train in a new MLflow run: hyperparameters, data stats, per-epoch metrics, the model.

    The run id is stored in the model's training.json so that evaluation logs to the same run.
    """
    from sasrec.train import train_sasrec

    stats = read_json(Path(sequences_dir) / schema.STATS_FILE)
    with tracking.mlflow_run(tracking_uri, experiment, run_name) as run_id:
        tracking.log_params(
            dataclasses.asdict(hparams) | {f"data_{k}": v for k, v in stats.items()}
        )
        lineage = {
            "mlflow_run_id": run_id,
            "mlflow_tracking_uri": tracking.resolve_tracking_uri(tracking_uri),
        }
        summary = train_sasrec(sequences_dir, model_dir, hparams, lineage, tracking.log_metrics)
        tracking.log_metrics({k: v for k, v in summary.items() if isinstance(v, float)})
        tracking.log_artifacts(model_dir, "model")
    return summary | lineage


def evaluate_step(
    model_dir: str | Path,
    sequences_dir: str | Path,
    out_dir: str | Path,
    tracking_uri: str | None = None,
) -> dict[str, float]:
    """Evaluate on the test users; log the metrics to the model's MLflow run when it has one."""
    from sasrec.checkpoint import read_training_info
    from sasrec.evaluate import evaluate_model

    metrics = evaluate_model(model_dir, sequences_dir, out_dir)
    info = read_training_info(model_dir)
    run_id, uri = info.get("mlflow_run_id"), tracking_uri or info.get("mlflow_tracking_uri")
    if run_id and tracking.run_exists(uri, run_id):
        with tracking.mlflow_run(uri, run_id=run_id):
            tracking.log_metrics({f"test_{k}": v for k, v in metrics.items()})
            tracking.log_artifacts(Path(out_dir), "evaluation")
    elif run_id:
        # The metrics are in metrics.json and KFP; losing them after training would be worse.
        log.warning(
            "MLflow run %s of this model is not in the store %s: test metrics not logged to "
            "MLflow; give every step the same tracking URI (a shared MLflow server)",
            run_id,
            uri,
        )
    return metrics
