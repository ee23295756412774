"""MLflow tracking: one run per pipeline run, shared by the train and evaluate steps.

MLflow is imported inside functions so that the library imports without it.
"""

import contextlib
import copy
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_EXPERIMENT = "sasrec"


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """`tracking_uri`, else $MLFLOW_TRACKING_URI, else MLflow's default sqlite store.

    The default (`sqlite:///mlflow.db`) is relative to the working directory; it is made
    absolute here so that every step of a local pipeline run writes to the same store.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path('mlflow.db').resolve()}"


def mlflow_key(name: str) -> str:
    """MLflow metric names allow no `@`: `ndcg@10` becomes `ndcg_at_10`."""
    return name.replace("@", "_at_")


@contextlib.contextmanager
def mlflow_run(
    tracking_uri: str | None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    run_id: str | None = None,
) -> Iterator[str]:
    """Start a new MLflow run, or resume `run_id`; yields the run id.

    Args:
        tracking_uri: See `resolve_tracking_uri`.
        experiment: Experiment of a new run (created when missing).
        run_name: Name of a new run.
        run_id: An existing run to log into instead of starting one.
    """
    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    if run_id is None:
        mlflow.set_experiment(experiment)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name) as run:
        yield run.info.run_id


def run_exists(tracking_uri: str | None, run_id: str) -> bool:
    """Whether the store at `tracking_uri` holds the run `run_id`."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(resolve_tracking_uri(tracking_uri)).get_run(run_id)
    except MlflowException:
        return False
    return True


def log_params(params: dict[str, Any]) -> None:
    """Log parameters of the active run in one call."""
    import mlflow

    mlflow.log_params(params)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log metrics of the active run in one call (one HTTP request to a server)."""
    import mlflow

    mlflow.log_metrics({mlflow_key(k): float(v) for k, v in metrics.items()}, step=step)


def log_artifacts(local_dir: str | Path, artifact_path: str) -> None:
    """Upload a directory to the active run's artifacts."""
    import mlflow

    mlflow.log_artifacts(str(local_dir), artifact_path=artifact_path)


def set_tags(tags: dict[str, str]) -> None:
    """Tag the active run."""
    import mlflow

    mlflow.set_tags(tags)


def code_version() -> dict[str, str]:
    """The package version and, from $SASREC_GIT_COMMIT or a git checkout, the commit."""
    from sasrec import __version__

    commit = os.environ.get("SASREC_GIT_COMMIT")
    if not commit:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(__file__).parent,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
    return {"code_version": __version__, "git_commit": commit}


def log_pytorch_model(model: Any, registered_model_name: str | None = None) -> str:
    """Log the model with MLflow's PyTorch flavour; returns its model URI.

    Input: (batch, max_len) int64 item indices, left-padded with 0; output: (batch,
    num_items + 1) float scores of every item as the next one (column 0 is padding). The
    `sasrec` package travels with the model, so `mlflow.pytorch.load_model` works anywhere;
    loading unpickles it, so load only models you trust (the pipeline itself reads the
    weights-only `model.pt`).
    """
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    import sasrec

    cpu_model = copy.deepcopy(model).cpu().eval()
    num_example = min(3, cpu_model.config.num_items)
    example = np.zeros((1, cpu_model.config.max_len), dtype=np.int64)
    example[0, -num_example:] = np.arange(1, num_example + 1)
    with torch.no_grad():
        scores = cpu_model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        cpu_model,
        name="model",
        signature=infer_signature(example, scores),
        input_example=example,
        code_paths=[str(Path(sasrec.__file__).parent)],
        # torch.export ("pt2", MLflow's default) fixes the batch size of the input example.
        serialization_format="pickle",
        registered_model_name=registered_model_name,
    )
    return info.model_uri
