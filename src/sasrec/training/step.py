"""The train step: one training job in an MLflow run, resumable from its checkpoint.

What the CLI's `sasrec train` and the train component run; under torchrun, every worker.
Torch is imported inside the functions: the compiler and the data images import this.
"""

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sasrec import storage, tracking
from sasrec.config import HParams, overrides_of
from sasrec.data import schema
from sasrec.errors import SASRecError, ServiceUnavailable, one_line
from sasrec.filenames import MODEL_DIR_ARTIFACT, TRAINING_FILE
from sasrec.inputs import SequenceFiles, read_sequences
from sasrec.io import read_json, require_output_dir
from sasrec.registry import versions
from sasrec.storage import redact
from sasrec.training.epoch_metrics import BufferedMetricsLogger

if TYPE_CHECKING:  # torch is imported by the steps that use it: see above
    from sasrec.training.train import Training
    from sasrec.training.trainjob import NodesRequest


log = logging.getLogger(__name__)


CHECKPOINT_FILE = "checkpoint.pt"  # in the checkpoint directory, beside:
CHECKPOINT_RUN_FILE = "mlflow_run.json"  # the MLflow run a resumed job continues


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
    nodes: "NodesRequest | None" = None,
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
        nodes: With more than one node, train as a Kubeflow TrainJob of `num_processes`
            processes (and `gpus` GPUs) per node, which this step follows to its end
            (`sasrec.training.trainjob`); needs a `checkpoint_dir` every node reaches.

    Raises:
        SASRecError: in a Kubernetes pod without a tracking URI, or with `gpus` and no
            usable CUDA.
    """
    from sasrec.device import require_cuda, resolve_device
    from sasrec.training import distributed

    if num_processes < 0:
        raise SASRecError(f"--nproc must be 0 or 1 (one process) or more, got {num_processes}")
    tracking.require_lasting_store(tracking_uri)
    on_nodes = nodes is not None and nodes.nodes > 1
    if gpus >= 1 and hparams.device != "cpu" and not on_nodes:  # the nodes have the GPUs
        require_cuda(gpus)
    require_output_dir(model_dir, schema.TRAIN_STEP)
    sequences = read_sequences(sequences_dir)  # checked before any process or run starts
    job = TrainJob(
        Path(sequences_dir), Path(model_dir), hparams, tracking_uri, experiment, run_name,
        checkpoint_dir or default_checkpoint_dir(model_dir), registered_model_name,
        parent_run_id, trial, pipeline_run_id,
    )  # fmt: skip
    if on_nodes:
        return _train_as_trainjob(job, nodes, checkpoint_dir, num_processes, gpus)
    if num_processes > 1 and not distributed.launched_by_torchrun():
        args = ["sasrec.cli", "train", *train_cli_args(job)]
        distributed.relaunch_with_torchrun(num_processes, args)
        return read_json(job.model_dir / TRAINING_FILE)
    with distributed.process_group(resolve_device(hparams.device)):
        from sasrec.training.train import start_training_on, train_and_save

        training = start_training_on(
            sequences, hparams, storage.join(job.checkpoint_dir, CHECKPOINT_FILE)
        )
        if distributed.is_main_process():
            with tracking.registry_errors(job.tracking_uri, "track the training run"):
                return _train_tracked(job, sequences, training)
        return train_and_save(training, sequences, job.model_dir)[1]


def _train_as_trainjob(
    job: TrainJob,
    nodes: "NodesRequest",
    checkpoint_dir: str | Path | None,
    num_processes: int,
    gpus: int,
) -> dict[str, Any]:
    """This job as a TrainJob of `nodes.nodes` nodes, each running `sasrec train` under torchrun."""
    from sasrec.training.trainjob import kubernetes_api_client, train_on_nodes

    args = train_flags(job)  # each node has its own --sequences and --out
    args += ["--gpus", str(gpus)] if gpus else []
    request = nodes.request(job.pipeline_run_id or "", job.trial or 0, max(num_processes, 1))
    return train_on_nodes(
        job.sequences_dir, job.model_dir, str(checkpoint_dir) if checkpoint_dir else None,
        dataclasses.replace(request, args=args), kubernetes_api_client(),
    )  # fmt: skip


def _train_tracked(job: TrainJob, sequences: SequenceFiles, training: "Training") -> dict[str, Any]:
    """Rank 0's training: in the checkpoint's MLflow run when it resumes, else a new run.

    The checkpoint, with every epoch's metrics, stays until MLflow holds all of the run:
    a rerun after an MLflow outage finds the finished training in it and only completes
    the logging, sending each metric once.
    """
    from sasrec.training.preemption import Preempted
    from sasrec.training.train import train_and_save

    run_file = storage.join(job.checkpoint_dir, CHECKPOINT_RUN_FILE)
    resumed_run = _resumable_run(job.tracking_uri, run_file) if training.resumed else None
    code_version = tracking.code_version()  # may ask git: once
    tags = {tracking.PIPELINE_RUN_TAG: job.pipeline_run_id} if job.pipeline_run_id else None
    run_name = tracking.readable_run_name(job.run_name, job.trial if job.parent_run_id else None)
    with tracking.mlflow_run(
        job.tracking_uri, job.experiment, run_name, resumed_run, job.parent_run_id, tags
    ) as run_id:
        if resumed_run:
            log.info("continuing MLflow run %s from %s", run_id, job.checkpoint_dir)
        else:
            storage.write_bytes(json.dumps({"run_id": run_id}).encode(), run_file)
            # Hyperparameters keep bare names (`params.lr` in a search needs no quoting);
            # the data's statistics and the code's version are grouped as data/ and code/.
            tracking.log_params(
                dataclasses.asdict(training.hparams)  # with what the data chose
                | {f"data/{k}": v for k, v in sequences.stats.items()}
                | code_version
            )
        lineage = {
            "mlflow_run_id": run_id,
            "mlflow_experiment_id": tracking.active_experiment_id(),
            # Without any user:password@ part: training.json is an artifact anyone may read.
            "mlflow_tracking_uri": redact(tracking.resolve_tracking_uri(job.tracking_uri)),
        }
        if job.trial is not None:
            lineage |= {"sweep_trial": job.trial, "mlflow_parent_run_id": job.parent_run_id}
        epoch_metrics = BufferedMetricsLogger(
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
        _log_the_trained_model(job, run_id, summary, code_version["code/git_commit"])
    _remove_checkpoint(job.checkpoint_dir)
    return summary | lineage


def _log_the_trained_model(
    job: TrainJob, run_id: str, summary: dict[str, Any], git_commit: str
) -> None:
    """The run's summary metrics, tags, model directory and serving model, each once.

    A rerun after an outage finds what an earlier attempt logged and adds only the rest.
    """
    from sasrec.serving.logged_model import log_recommender_model

    tracking.log_metrics_once({k: v for k, v in summary.items() if isinstance(v, float)})
    tracking.set_tags(
        {"data_fingerprint": summary["data_fingerprint"], tracking.GIT_COMMIT_TAG: git_commit}
    )
    tracking.log_artifacts(job.model_dir, MODEL_DIR_ARTIFACT)
    if tracking.logged_model_uri(run_id) is None:
        log_recommender_model(job.model_dir, job.registered_model_name)
    elif job.registered_model_name:
        versions.register_run_model(job.tracking_uri, job.registered_model_name, run_id)


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
    return ["--sequences", str(job.sequences_dir), "--out", str(job.model_dir), *train_flags(job)]


def train_flags(job: TrainJob) -> list[str]:
    """`train_cli_args` without the input and output folders."""
    args = ["--hparams", json.dumps(overrides_of(job.hparams))]
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


def train_trial_step(model_dir: str | Path, hparams: HParams, **train_args: Any) -> dict[str, Any]:
    """`train_step` for one trial of a sweep: a trial that cannot train is recorded, not raised.

    The failure (its one-line cause) goes to `model_dir/trial_failed.json`, so that the
    other trials and the selection go on. Errors a rerun may fix (an MLflow server or an
    object store that does not answer) and SIGTERM still end the step, so that the pod is
    retried.
    """
    from sasrec.io import atomic_dir, write_json
    from sasrec.registry.sweep import FAILED_TRIAL_FILE

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
