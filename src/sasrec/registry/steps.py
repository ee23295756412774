"""The registry steps: plan a sweep's trials, select the winner, promote it, close the runs.

Modules that need torch are imported inside the steps that use them.
"""

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sasrec import tracking
from sasrec.config import DEFAULT_PROMOTION_METRIC
from sasrec.data import schema
from sasrec.errors import SASRecError
from sasrec.io import read_json, require_complete, require_output_dir
from sasrec.registry import versions

if TYPE_CHECKING:  # torch is imported by the steps that use it: see above
    pass


log = logging.getLogger(__name__)


def plan_trials_step(
    hparams: dict[str, Any],
    hparams_grid: list[dict[str, Any]],
    tracking_uri: str | None = None,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    promotion_metric: str = DEFAULT_PROMOTION_METRIC,
    pipeline_run_id: str | None = None,
) -> list[dict[str, Any]]:
    """The trials of a sweep (see `sweep.plan_trials`), each with its MLflow parent run.

    With a grid, one parent MLflow run is opened for the sweep and every trial's run is
    its child (`select_trial_step` closes it); without, the one trial has no parent.
    `promotion_metric` is checked here too, so that a wrong one fails before training.
    """
    from sasrec.registry.promotion import require_metric
    from sasrec.registry.sweep import plan_trials

    require_metric(promotion_metric)
    trials = plan_trials(hparams, hparams_grid)
    parent_run_id = ""
    if hparams_grid:
        tracking.require_lasting_store(tracking_uri)
        with tracking.registry_errors(tracking_uri, "open the sweep's MLflow run"):
            parent_run_id = tracking.start_parent_run(
                tracking_uri, experiment, tracking.readable_run_name(run_name),
                {"hparams": json.dumps(hparams), "hparams_grid": json.dumps(hparams_grid)},
                {tracking.PIPELINE_RUN_TAG: pipeline_run_id} if pipeline_run_id else None,
            )  # fmt: skip
    return [trial | {"parent_run_id": parent_run_id} for trial in trials]


def _trial_result(model_dir: str | Path) -> dict[str, Any]:
    """A trial's training.json, or its failure record."""
    from sasrec.model_dir import read_training_info
    from sasrec.registry.sweep import FAILED_TRIAL_FILE

    model_dir = require_complete(model_dir, schema.TRAIN_STEP)
    if (model_dir / FAILED_TRIAL_FILE).is_file():
        return read_json(model_dir / FAILED_TRIAL_FILE)
    return read_training_info(model_dir)


def select_trial_step(
    model_dirs: list[str | Path], out_dir: str | Path, tracking_uri: str | None = None
) -> dict[str, Any]:
    """Copy the trial with the best validation NDCG@10 to `out_dir`, with every trial's results.

    The copy holds `trials.json` beside the winner's files. Failed trials are listed there
    with their cause. A sweep's parent MLflow run gets the winner and the failures, and is
    closed: FINISHED, or FAILED when no trial trained.

    Returns:
        The winner's training summary, with its trial number and the number of trials.

    Raises:
        SASRecError: when every trial failed, naming each one's cause.
    """
    import shutil

    from sasrec.io import atomic_dir, write_json
    from sasrec.registry.sweep import TRIALS_FILE, trials_table, winner

    results = [_trial_result(d) for d in model_dirs]
    table = trials_table(results)
    for row in table:
        if "error" in row:
            log.warning("trial %d failed: %s", row["trial"], row["error"])
    parent_run_id = results[0].get("mlflow_parent_run_id")
    uri = tracking_uri or next(
        (r["mlflow_tracking_uri"] for r in results if "mlflow_tracking_uri" in r), None
    )
    try:
        best = winner(table)
    except SASRecError:
        if parent_run_id:
            _finish_sweep_run(uri, parent_run_id, table, None)
        raise
    best_dir = next(
        d for d, info in zip(model_dirs, results, strict=True)
        if info.get("sweep_trial", 0) == best["trial"]
    )  # fmt: skip
    require_output_dir(out_dir, schema.TRAIN_STEP)
    with atomic_dir(out_dir, schema.TRAIN_STEP) as tmp:
        shutil.copytree(best_dir, tmp, dirs_exist_ok=True)
        if len(table) > 1:
            write_json(table, tmp / TRIALS_FILE)
    log.info("trial %d of %d won: validation ndcg@10 %.4f", best["trial"], len(table),
             best["val_ndcg@10"])  # fmt: skip
    if parent_run_id:
        _finish_sweep_run(uri, parent_run_id, table, best)
    winner_info = next(i for i in results if i.get("sweep_trial", 0) == best["trial"])
    return winner_info | {"sweep_trial": best["trial"], "sweep_trials": len(table)}


def _finish_sweep_run(
    tracking_uri: str | None,
    parent_run_id: str,
    table: list[dict[str, Any]],
    best: dict[str, Any] | None,
) -> None:
    """Log a sweep's outcome to its parent run and close it: FINISHED, or FAILED without a winner.

    Each failed trial's cause is a tag `sweep.trial_<n>.error`.
    """
    from sasrec.registry.sweep import trained

    failures = {f"sweep.trial_{row['trial']}.error": row["error"][:5000]
                for row in table if "error" in row}  # fmt: skip
    metrics = {"trials": float(len(table)), "failed_trials": float(len(failures))}
    tags = failures
    if best is not None:
        metrics["best_val_ndcg@10"] = best["val_ndcg@10"]
        tags = tags | {"sweep.winner_trial": str(best["trial"]),
                       "sweep.winner_run_id": str(best["mlflow_run_id"])}  # fmt: skip
    status = "FAILED" if not trained(table) else "FINISHED"
    with tracking.registry_errors(tracking_uri, "close the sweep's MLflow run"):
        tracking.finish_parent_run(tracking_uri, parent_run_id, metrics, tags, status)


def promote_step(
    model_dir: str | Path,
    sequences_dir: str | Path,
    out_dir: str | Path,
    registered_model_name: str | None,
    metric: str = DEFAULT_PROMOTION_METRIC,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Register the model; give it the `champion` alias if it beats the champion on `metric`.

    The first version becomes champion; otherwise both are scored on this run's test users
    (`sasrec.registry.promotion`) and the alias moves only when the new version scores higher (a
    tie keeps the champion). The move is decided under a registry lease against the
    champion as it is then (`sasrec.registry.promotion.promote`): runs promoting at once cannot
    crown the worse model. A champion that cannot be loaded yields to the new version.
    Without a name nothing is registered. The decision goes to `out_dir/promotion.json`
    and, with both scores, to tags on the new version.
    """
    from sasrec.data.schema import PROMOTION_FILE
    from sasrec.io import atomic_dir, write_json
    from sasrec.model_dir import read_training_info
    from sasrec.registry import promotion

    promotion.require_metric(metric)  # before anything is registered
    require_output_dir(out_dir, schema.PROMOTE_STEP)
    model_dir = require_complete(model_dir, schema.TRAIN_STEP)
    if not registered_model_name:
        decision = promotion.Decision("not registered", False, metric)
    else:
        info = read_training_info(model_dir)
        uri = tracking_uri or info["mlflow_tracking_uri"]
        with tracking.registry_errors(uri, f"register and promote {registered_model_name}"):
            decision = promotion.promote(
                uri, registered_model_name, info["mlflow_run_id"], model_dir,
                Path(sequences_dir), metric,
            )  # fmt: skip
            versions.tag_version(uri, registered_model_name, decision.version, {
                f"promotion.{k}": str(v) for k, v in decision.as_dict().items() if v is not None
            })  # fmt: skip
    log.info("promotion: %s", decision.as_dict())
    with atomic_dir(out_dir, schema.PROMOTE_STEP) as tmp:
        write_json(decision.as_dict(), tmp / PROMOTION_FILE)
    return decision.as_dict()


def close_runs_step(
    tracking_uri: str | None, experiment: str, pipeline_run_id: str, pipeline_state: str
) -> list[str]:
    """End the MLflow runs of a pipeline run that are still RUNNING once it is over.

    The pipeline's exit task: a pod killed for good (retries spent, out of memory) or a task
    that failed before its run ended leaves its run RUNNING. They end FAILED when the
    pipeline failed, else KILLED. Returns their ids.
    """
    if tracking.in_kubernetes_pod() and not (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        return []  # no lasting store: no run was opened (see `tracking.require_lasting_store`)
    status = "KILLED" if pipeline_state == "SUCCEEDED" else "FAILED"
    with tracking.registry_errors(tracking_uri, "close the pipeline's MLflow runs"):
        closed = tracking.close_pipeline_runs(tracking_uri, experiment, pipeline_run_id, status)
    for run_id in closed:
        log.warning("MLflow run %s was left RUNNING by pipeline run %s: now %s", run_id,
                    pipeline_run_id, status)  # fmt: skip
    return closed
