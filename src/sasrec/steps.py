"""The four pipeline steps, each one call: what the CLI and the KFP components run.

Modules that need torch are imported inside the steps that use them: the download and
sequences images carry no torch.
"""

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sasrec import storage, tracking
from sasrec.config import HParams
from sasrec.data import schema, titles
from sasrec.data.download import default_cache_dir, download_interactions, fetch_source_file
from sasrec.data.sequences import build_sequences
from sasrec.errors import SASRecError, ServiceUnavailable, one_line
from sasrec.inputs import SequenceFiles, read_sequences
from sasrec.io import read_json, require_complete, require_output_dir
from sasrec.storage import redact

if TYPE_CHECKING:  # torch is imported by the steps that use it: see above
    from sasrec.train import Training

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"  # in the checkpoint directory, beside:
CHECKPOINT_RUN_FILE = "mlflow_run.json"  # the MLflow run a resumed job continues


def download_step(
    source: str,
    out_dir: str | Path,
    amazon_base_url: str | None = None,
    cache_dir: str | Path | None = None,
    with_metadata: bool = False,
) -> dict[str, int]:
    """Fetch `source` and write `out_dir/interactions.parquet`.

    With `with_metadata`, also the category's item titles as `out_dir/item_titles.parquet`.
    Downloads are cached in `cache_dir` (None: `default_cache_dir()`).
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    out_dir = Path(out_dir)
    metadata = titles.metadata_file(source, amazon_base_url) if with_metadata else None
    counts = download_interactions(
        source, out_dir / schema.INTERACTIONS_FILE, amazon_base_url, cache_dir
    )
    if metadata:
        local_file = fetch_source_file(metadata, cache_dir)
        out_path = out_dir / schema.ITEM_TITLES_FILE
        counts["num_item_titles"] = titles.convert_item_titles(local_file, out_path)
    return counts


def sequences_step(
    interactions_path: str | Path,
    out_dir: str | Path,
    kcore: int = 5,
    split: str = "leave_one_out",
    max_len: int = 0,
) -> dict[str, Any]:
    """Build the sequence files and stats.json in `out_dir` (see `build_sequences`)."""
    return build_sequences(interactions_path, out_dir, kcore, split, max_len)


@dataclass(frozen=True)
class TrainJob:
    """What one training run needs beyond the data: where to write and how to track."""

    sequences_dir: Path
    model_dir: Path
    hparams: HParams
    tracking_uri: str | None
    experiment: str
    run_name: str | None
    checkpoint_dir: str | Path  # a local path, or a gs:// or s3:// URI
    registered_model_name: str | None
    parent_run_id: str | None = None  # a sweep's parent MLflow run
    trial: int | None = None  # the trial number in a sweep
    pipeline_run_id: str | None = None  # the KFP run this training is a task of


def default_checkpoint_dir(model_dir: str | Path) -> Path:
    """`<model_dir>.checkpoint`: beside the output, so a rerun on the same disk finds it."""
    model_dir = Path(model_dir)
    return model_dir.with_name(model_dir.name + ".checkpoint")


def pipeline_checkpoint_dir(
    checkpoint_root: str, pipeline_run_id: str, trial: int = 0
) -> str | None:
    """A train task's checkpoint folder under `checkpoint_root`: per pipeline run and trial.

    Keyed by the pipeline run, so a retried pod of the same run finds the checkpoint and a
    new run starts afresh. None (the default folder beside the model) when the root is empty.
    """
    if not checkpoint_root:
        return None
    return str(storage.join(checkpoint_root, pipeline_run_id, f"train-{trial}"))


def train_step(
    sequences_dir: str | Path,
    model_dir: str | Path,
    hparams: HParams,
    tracking_uri: str | None = None,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    checkpoint_dir: str | Path | None = None,
    num_processes: int = 1,
    registered_model_name: str | None = None,
    gpus: int = 0,
    parent_run_id: str | None = None,
    trial: int | None = None,
    pipeline_run_id: str | None = None,
) -> dict[str, Any]:
    """Train in an MLflow run: hyperparameters, data stats, per-epoch metrics, the model.

    The run id is stored in the model's training.json so that evaluation logs to the same run.
    A checkpoint is kept in `checkpoint_dir` (default `<model_dir>.checkpoint`) after every
    epoch; rerunning the step after a kill continues from it, in the same MLflow run.
    Per-epoch metrics reach MLflow through a buffer that outlasts a server outage.

    Args:
        sequences_dir: Output of the sequences step.
        model_dir: The model directory to write.
        hparams: Hyperparameters.
        tracking_uri: MLflow tracking URI; None for $MLFLOW_TRACKING_URI or the default.
        experiment: MLflow experiment of a new run.
        run_name: MLflow name of a new run.
        checkpoint_dir: Where the per-epoch checkpoint and the run id are kept: a local
            path, or a gs:// or s3:// URI (then nothing of it is on local disk).
        num_processes: Data-parallel processes (one per GPU); more than 1 relaunches this
            step under torchrun.
        registered_model_name: Also register the MLflow model under this name.
        gpus: GPUs given to this job; at least 1 means CUDA must work (unless hparams ask
            for device cpu), else the step fails at once instead of training on the CPU.
        parent_run_id: In a sweep: the MLflow run whose child this training's run is.
        trial: In a sweep: this training's trial number, kept in training.json.
        pipeline_run_id: The KFP run this is a task of: a tag on the MLflow run, by which
            the pipeline's exit task finds the runs a failure left RUNNING.

    Raises:
        SASRecError: in a Kubernetes pod without a tracking URI, or with `gpus` and no
            usable CUDA.
    """
    from sasrec import distributed
    from sasrec.device import require_cuda, resolve_device

    if num_processes < 0:
        raise SASRecError(f"--nproc must be 0 or 1 (one process) or more, got {num_processes}")
    tracking.require_lasting_store(tracking_uri)
    if gpus >= 1 and hparams.device != "cpu":
        require_cuda(gpus)
    require_output_dir(model_dir, schema.TRAIN_STEP)
    sequences = read_sequences(sequences_dir)  # checked before any process or run starts
    job = TrainJob(
        Path(sequences_dir), Path(model_dir), hparams, tracking_uri, experiment, run_name,
        checkpoint_dir or default_checkpoint_dir(model_dir), registered_model_name,
        parent_run_id, trial, pipeline_run_id,
    )  # fmt: skip
    if num_processes > 1 and not distributed.launched_by_torchrun():
        args = ["sasrec.cli", "train", *train_cli_args(job)]
        distributed.relaunch_with_torchrun(num_processes, args)
        return read_json(job.model_dir / "training.json")
    with distributed.process_group(resolve_device(hparams.device)):
        from sasrec.train import start_training_on, train_and_save

        training = start_training_on(
            sequences, hparams, storage.join(job.checkpoint_dir, CHECKPOINT_FILE)
        )
        if distributed.is_main_process():
            with tracking.registry_errors(job.tracking_uri, "track the training run"):
                return _train_tracked(job, sequences, training)
        return train_and_save(training, sequences, job.model_dir)[1]


def _train_tracked(job: TrainJob, sequences: SequenceFiles, training: "Training") -> dict[str, Any]:
    """Rank 0's training: in the checkpoint's MLflow run when it resumes, else a new run.

    The checkpoint, with every epoch's metrics, stays until MLflow holds all of the run:
    a rerun after an MLflow outage finds the finished training in it and only completes
    the logging, sending each metric once.
    """
    from sasrec.preemption import Preempted
    from sasrec.train import train_and_save

    run_file = storage.join(job.checkpoint_dir, CHECKPOINT_RUN_FILE)
    resumed_run = _resumable_run(job.tracking_uri, run_file) if training.resumed else None
    code_version = tracking.code_version()  # may ask git: once
    tags = {tracking.PIPELINE_RUN_TAG: job.pipeline_run_id} if job.pipeline_run_id else None
    with tracking.mlflow_run(
        job.tracking_uri, job.experiment, job.run_name, resumed_run, job.parent_run_id, tags
    ) as run_id:
        if resumed_run:
            log.info("continuing MLflow run %s from %s", run_id, job.checkpoint_dir)
        else:
            storage.write_bytes(json.dumps({"run_id": run_id}).encode(), run_file)
            tracking.log_params(
                dataclasses.asdict(training.hparams)  # with the dropout chosen for the data
                | {f"data_{k}": v for k, v in sequences.stats.items()}
                | code_version
            )
        lineage = {
            "mlflow_run_id": run_id,
            # Without any user:password@ part: training.json is an artifact anyone may read.
            "mlflow_tracking_uri": redact(tracking.resolve_tracking_uri(job.tracking_uri)),
        }
        if job.trial is not None:
            lineage |= {"sweep_trial": job.trial, "mlflow_parent_run_id": job.parent_run_id}
        epoch_metrics = tracking.BufferedMetricsLogger(
            job.tracking_uri, run_id, tracking.outage_seconds(), resumed=bool(resumed_run)
        )
        history = training.state.history
        for record in history:  # what an earlier attempt may not have sent
            epoch_metrics.put(record)
        try:
            _, summary = train_and_save(
                training, sequences, job.model_dir, lineage,
                lambda metrics, epoch: epoch_metrics.put(history[-1]),
            )  # fmt: skip
        except (Exception, Preempted):
            epoch_metrics.abandon()  # what is not sent is in the checkpoint
            raise
        epoch_metrics.close()
        tracking.log_metrics_once({k: v for k, v in summary.items() if isinstance(v, float)})
        tracking.set_tags({
            "data_fingerprint": summary["data_fingerprint"],
            tracking.GIT_COMMIT_TAG: code_version["git_commit"],
        })  # fmt: skip
        tracking.log_artifacts(job.model_dir, "model_dir")
        if tracking.logged_model_uri(run_id) is None:
            tracking.log_recommender_model(job.model_dir, job.registered_model_name)
        elif job.registered_model_name:
            tracking.register_run_model(job.tracking_uri, job.registered_model_name, run_id)
    _remove_checkpoint(job.checkpoint_dir)
    return summary | lineage


def _remove_checkpoint(checkpoint_dir: str | Path) -> None:
    """Delete the files this job wrote in `checkpoint_dir`, by name, and the folder if empty.

    The folder may be shared (`--checkpoint-dir`, a bucket prefix): nothing else in it
    is touched.
    """
    for name in (CHECKPOINT_FILE, CHECKPOINT_RUN_FILE):
        storage.remove_file(storage.join(checkpoint_dir, name))
    storage.remove_empty_dir(checkpoint_dir)


def _resumable_run(tracking_uri: str | None, run_file: str | Path) -> str | None:
    """The MLflow run a resumed checkpoint belongs to, when it is recorded and still exists."""
    run_record = storage.read_bytes(run_file)
    if run_record is None:
        return None
    run_id = json.loads(run_record)["run_id"]
    return run_id if tracking.run_exists(tracking_uri, run_id) else None


def train_cli_args(job: TrainJob) -> list[str]:
    """The `sasrec train` arguments that run this same job in each torchrun worker."""
    args = ["--sequences", str(job.sequences_dir), "--out", str(job.model_dir)]
    args += ["--hparams", json.dumps(dataclasses.asdict(job.hparams))]
    args += ["--experiment", job.experiment, "--checkpoint-dir", str(job.checkpoint_dir)]
    for flag, value in (
        ("--tracking-uri", job.tracking_uri),
        ("--run-name", job.run_name),
        ("--register-as", job.registered_model_name),
        ("--parent-run-id", job.parent_run_id),
        ("--trial", job.trial),
        ("--pipeline-run-id", job.pipeline_run_id),
    ):
        if value is not None and value != "":
            args += [flag, str(value)]
    return args


def plan_trials_step(
    hparams: dict[str, Any],
    hparams_grid: list[dict[str, Any]],
    tracking_uri: str | None = None,
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    promotion_metric: str = "ndcg@10",
    pipeline_run_id: str | None = None,
) -> list[dict[str, Any]]:
    """The trials of a sweep (see `sweep.plan_trials`), each with its MLflow parent run.

    With a grid, one parent MLflow run is opened for the sweep and every trial's run is
    its child (`select_trial_step` closes it); without, the one trial has no parent.
    `promotion_metric` is checked here too, so that a wrong one fails before training.
    """
    from sasrec.promotion import require_metric
    from sasrec.sweep import plan_trials

    require_metric(promotion_metric)
    trials = plan_trials(hparams, hparams_grid)
    parent_run_id = ""
    if hparams_grid:
        tracking.require_lasting_store(tracking_uri)
        with tracking.registry_errors(tracking_uri, "open the sweep's MLflow run"):
            parent_run_id = tracking.start_parent_run(
                tracking_uri, experiment, run_name,
                {"hparams": json.dumps(hparams), "hparams_grid": json.dumps(hparams_grid)},
                {tracking.PIPELINE_RUN_TAG: pipeline_run_id} if pipeline_run_id else None,
            )  # fmt: skip
    return [trial | {"parent_run_id": parent_run_id} for trial in trials]


def train_trial_step(model_dir: str | Path, hparams: HParams, **train_args: Any) -> dict[str, Any]:
    """`train_step` for one trial of a sweep: a trial that cannot train is recorded, not raised.

    The failure (its one-line cause) goes to `model_dir/trial_failed.json`, so that the
    other trials and the selection go on. Errors a rerun may fix (an MLflow server or an
    object store that does not answer) and SIGTERM still end the step, so that the pod is
    retried.
    """
    from sasrec.io import atomic_dir, write_json
    from sasrec.sweep import FAILED_TRIAL_FILE

    trial = train_args.get("trial")
    try:
        return train_step(model_dir=model_dir, hparams=hparams, **train_args)
    except ServiceUnavailable:
        raise
    except Exception as err:  # whatever stops this trial must not stop the others
        cause = one_line(err)
        log.error("trial %s failed: %s", trial, cause)
        failure = {
            "sweep_trial": trial, "hparams": dataclasses.asdict(hparams), "error": cause,
            "mlflow_parent_run_id": train_args.get("parent_run_id"),
        }  # fmt: skip
        with atomic_dir(model_dir, schema.TRAIN_STEP) as tmp:
            write_json(failure, tmp / FAILED_TRIAL_FILE)
        return failure


def _trial_result(model_dir: str | Path) -> dict[str, Any]:
    """A trial's training.json, or its failure record."""
    from sasrec.checkpoint import read_training_info
    from sasrec.sweep import FAILED_TRIAL_FILE

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
    from sasrec.sweep import TRIALS_FILE, trials_table, winner

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
    from sasrec.sweep import trained

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
    metric: str = "ndcg@10",
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Register the model; give it the `champion` alias if it beats the champion on `metric`.

    The first version becomes champion; otherwise both are scored on this run's test users
    (`sasrec.promotion`) and the alias moves only when the new version scores higher (a
    tie keeps the champion). The move is decided under a registry lease against the
    champion as it is then (`sasrec.promotion.promote`): runs promoting at once cannot
    crown the worse model. A champion that cannot be loaded yields to the new version.
    Without a name nothing is registered. The decision goes to `out_dir/promotion.json`
    and, with both scores, to tags on the new version.
    """
    from sasrec import promotion
    from sasrec.checkpoint import read_training_info
    from sasrec.evaluate import PROMOTION_FILE
    from sasrec.io import atomic_dir, write_json

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
            tracking.tag_version(uri, registered_model_name, decision.version, {
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


def evaluate_step(
    model_dir: str | Path,
    sequences_dir: str | Path,
    out_dir: str | Path,
    tracking_uri: str | None = None,
    exclude_history: bool = True,
    promotion_dir: str | Path | None = None,
) -> dict[str, float]:
    """Evaluate the model and the baselines; log metrics and report to the model's MLflow run.

    Writes metrics.json, breakdowns.csv and report.html into `out_dir`; with
    `promotion_dir` (the promote step's output) the report shows its decision.
    """
    from sasrec.checkpoint import read_training_info
    from sasrec.evaluate import PROMOTION_FILE, evaluate_model

    promotion = read_json(Path(promotion_dir) / PROMOTION_FILE) if promotion_dir else None
    metrics = evaluate_model(
        model_dir, sequences_dir, out_dir, exclude_history=exclude_history, promotion=promotion
    )
    info = read_training_info(model_dir)
    run_id, uri = info.get("mlflow_run_id"), tracking_uri or info.get("mlflow_tracking_uri")
    if run_id and tracking.run_exists(uri, run_id):
        with (
            tracking.registry_errors(uri, f"log the evaluation to MLflow run {run_id}"),
            tracking.mlflow_run(uri, run_id=run_id),
        ):
            tracking.log_metrics_once({f"test_{k}": v for k, v in metrics.items()})
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


def recommend_step(
    model_dir: str | Path, sequences_dir: str | Path, out_dir: str | Path, k: int = 10
) -> dict[str, int]:
    """Write every user's top-k unseen items to `out_dir/recommendations.parquet`."""
    from sasrec.recommend import recommend_all_users

    return recommend_all_users(model_dir, sequences_dir, out_dir, k)
