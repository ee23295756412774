"""MLflow tracking: one run per pipeline run, shared by the train and evaluate steps.

MLflow is imported inside functions so that the library imports without it.
"""

import contextlib
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sasrec.errors import SASRecError, ServiceUnavailable, one_line
from sasrec.storage import redact

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "sasrec"
# How long training waits for an MLflow server that went away (restart, proxy errors)
# before it gives up on the run's metrics; override with $SASREC_MLFLOW_OUTAGE_SECONDS.
OUTAGE_SECONDS_ENV = "SASREC_MLFLOW_OUTAGE_SECONDS"
DEFAULT_OUTAGE_SECONDS = 900.0
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own tag for the code revision
# On every run a pipeline run opens: its exit task closes those a failure left RUNNING.
PIPELINE_RUN_TAG = "sasrec.pipeline_run_id"


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """`tracking_uri`, else $MLFLOW_TRACKING_URI, else MLflow's default sqlite store.

    The default (`sqlite:///mlflow.db`) is relative to the working directory; it is made
    absolute here so that every step of a local pipeline run writes to the same store.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path('mlflow.db').resolve()}"


@contextlib.contextmanager
def registry_errors(tracking_uri: str | None, action: str) -> Iterator[None]:
    """Turn a failure of MLflow's tracking server or registry into one line without credentials.

    Raises:
        ServiceUnavailable: when the server did not answer (refused connection, timeout,
            5xx): a rerun may succeed.
        SASRecError: for any other refusal (credentials, a missing model or version).
    """
    import requests
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, requests.RequestException) as err:
        where = redact(resolve_tracking_uri(tracking_uri))
        status = getattr(err, "get_http_status_code", lambda: None)()
        if _did_not_answer(err, status):
            raise ServiceUnavailable(
                f"cannot {action}: MLflow at {where} did not answer ({one_line(err)}); check "
                "that the server is up and reachable, then rerun"
            ) from err
        raise SASRecError(f"cannot {action} at MLflow {where}: {one_line(err)}") from err


def _did_not_answer(err: BaseException, status: int | None) -> bool:
    """Whether an MLflow client error says the server did not answer, not that it refused.

    MLflow wraps requests' connection errors in its own exception: their text tells.
    """
    import requests

    unanswered = ("Max retries exceeded", "Connection refused", "NewConnectionError", "timed out")
    return (
        isinstance(err, requests.ConnectionError | requests.Timeout)
        or (status is not None and status >= 500)
        or any(words in str(err) for words in unanswered)
    )


def in_kubernetes_pod() -> bool:
    """Whether this process runs in a Kubernetes pod (the kubelet sets this in every pod)."""
    return "KUBERNETES_SERVICE_HOST" in os.environ


def require_lasting_store(tracking_uri: str | None) -> None:
    """Refuse, in a pod, to track into MLflow's default store: a file that dies with the pod.

    A tracking URI given on purpose, even a file store, is taken as asked.

    Raises:
        SASRecError: in a Kubernetes pod with no tracking URI.
    """
    if in_kubernetes_pod() and not (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        raise SASRecError(
            "no MLflow tracking URI, and this is a Kubernetes pod: the default sqlite store "
            "would die with the pod. Set the pipeline parameter mlflow_tracking_uri (or "
            "MLFLOW_TRACKING_URI) to an MLflow server the pods reach, e.g. "
            "http://mlflow.mlflow.svc:5000"
        )


# The sections of a run's metrics in the MLflow UI (it groups charts by the part before "/"):
# a prefix of a training metric's name, and the section it goes to.
TRAINING_SECTIONS = (
    ("best_val_", "val/best_"),  # training.json's best validation figures
    ("val_", "val/"),  # every validation pass
    ("train_", "train/"),
    ("epoch_", "train/epoch_"),
)
# The same for the evaluation's metrics.json; the rest are the model's test figures. The UI
# orders sections by name: test, its baselines and protocols, then train, val, val_final.
EVALUATION_SECTIONS = (
    ("baseline_popularity_", "test_baseline_popularity/"),
    ("baseline_transition_", "test_baseline_transition/"),
    ("num_test_users", "test/num_users"),
    ("num_valid_users", "val_final/num_users"),
    ("val_", "val_final/"),  # the final model on every validation user
    ("sampled_", "test_sampled/"),
    ("popsampled_", "test_popsampled/"),
    ("", "test/"),
)


def mlflow_key(name: str, sections: tuple[tuple[str, str], ...] = TRAINING_SECTIONS) -> str:
    """A metric's MLflow name: in its section of the run page, with no `@` (MLflow allows none).

    `val_ndcg@10` becomes `val/ndcg_at_10`; with EVALUATION_SECTIONS, `ndcg@10` becomes
    `test/ndcg_at_10` and `baseline_popularity_hit@10` `test_baseline_popularity/hit_at_10`.
    """
    for prefix, section in sections:
        if name.startswith(prefix):
            name = section + name[len(prefix) :]
            break
    return name.replace("@", "_at_")


# KFP's local runner names a pipeline job <pipeline>-YYYY-MM-DD-HH-MM-SS-micro, and a task
# inside a loop <job>/for-loop-1-iteration-0: too long for the run table's name column.
LOCAL_JOB_NAME = re.compile(r"^(.+)-\d{4}-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-\d+$")


def readable_run_name(job_name: str | None, trial: int | None = None) -> str | None:
    """A short MLflow run name for a pipeline job's run: "sasrec 12-07 14:29:53".

    A sweep's trial is "trial N": it sits under its sweep's run, which has the job's name.
    A cluster's job name (short already) is kept, less any "/loop" suffix.
    """
    if trial is not None:
        return f"trial {trial}"
    if not job_name:
        return job_name
    job_name = job_name.split("/")[0]
    local = LOCAL_JOB_NAME.match(job_name)
    if local:
        name, month, day, hour, minute, second = local.groups()
        return f"{name} {month}-{day} {hour}:{minute}:{second}"
    return job_name


# Opens MLflow 3's UI on training runs: without it the UI opens on its GenAI pages (traces).
UI_WORKFLOW = "workflowType=machine_learning"
# The experiment tag that says it trains models (for UIs that read it), set only when absent.
EXPERIMENT_KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


def ui_link(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI's page of a run (or of the experiment's runs), opening on training runs."""
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{redact(uri).rstrip('/')}/#/experiments/{experiment_id}/{page}?{UI_WORKFLOW}"


def training_experiment(client: Any, name: str) -> str:
    """The id of experiment `name`: created when missing, tagged as model training if untagged.

    Another run may create it at the same moment: then that one is used. A kind the
    experiment already has (the user's) is left as it is.
    """
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = client.get_experiment_by_name(name)
    if EXPERIMENT_KIND_TAG not in found.tags:
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
    return found.experiment_id


@contextlib.contextmanager
def mlflow_run(
    tracking_uri: str | None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[str]:
    """Start a new MLflow run, or resume `run_id`; yields the run id.

    The run ends FINISHED, FAILED on an error, KILLED on SIGTERM (`Preempted`).

    Args:
        tracking_uri: See `resolve_tracking_uri`.
        experiment: Experiment of a new run (created when missing).
        run_name: Name of a new run.
        run_id: An existing run to log into instead of starting one.
        parent_run_id: Make a new run a child of this one (a sweep's trials).
        tags: Tags of a new run.
    """
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    # MLflow prints the run's link with the tracking URI as given, a password included;
    # the link is logged here instead, without it.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(uri)
    if run_id is None:
        mlflow.set_experiment(experiment_id=training_experiment(mlflow.MlflowClient(), experiment))
    run = mlflow.start_run(
        run_id=run_id, run_name=None if run_id else run_name, parent_run_id=parent_run_id,
        tags=None if run_id else tags,
    )  # fmt: skip
    if uri.startswith(("http://", "https://")):
        log.info("MLflow run: %s", ui_link(uri, run.info.experiment_id, run.info.run_id))
    try:
        yield run.info.run_id
    except BaseException as err:
        # SIGTERM (`Preempted`): the retried pod resumes this run. The error that ended the
        # run is what the user sees, even when MLflow cannot take the status now.
        _end_run("KILLED" if isinstance(err, SystemExit) else "FAILED")
        raise
    mlflow.end_run()


def active_experiment_id() -> str:
    """The experiment of the active run (inside `mlflow_run`)."""
    import mlflow

    return mlflow.active_run().info.experiment_id


def _end_run(status: str) -> None:
    import mlflow

    try:
        mlflow.end_run(status)
    except Exception as err:  # the server is away: the run's status stays as it was
        log.warning("MLflow did not take the run's end (%s): %s", status, one_line(err))


def start_parent_run(
    tracking_uri: str | None,
    experiment: str,
    run_name: str | None,
    params: dict[str, Any],
    tags: dict[str, str] | None = None,
) -> str:
    """Create a run that stays open while its children (a sweep's trials) run elsewhere.

    `finish_parent_run` closes it. Returns its run id.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    run = client.create_run(training_experiment(client, experiment), run_name=run_name, tags=tags)
    client.log_batch(
        run.info.run_id,
        params=[mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items()],
    )
    return run.info.run_id


def finish_parent_run(
    tracking_uri: str | None,
    run_id: str,
    metrics: dict[str, float],
    tags: dict[str, str],
    status: str = "FINISHED",
) -> None:
    """Log a sweep's outcome to its parent run and close the run with `status`."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    timestamp = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[
            mlflow.entities.Metric(mlflow_key(k), v, timestamp, 0) for k, v in metrics.items()
        ],
        tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()],
    )
    client.set_terminated(run_id, status)


def close_pipeline_runs(
    tracking_uri: str | None, experiment: str, pipeline_run_id: str, status: str
) -> list[str]:
    """End with `status` every run of `experiment` that pipeline run left RUNNING; their ids."""
    client = mlflow_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    running = client.search_runs(
        [found.experiment_id],
        f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run_id}' and attributes.status = 'RUNNING'",
    )
    for run in running:
        client.set_terminated(run.info.run_id, status)
    return [run.info.run_id for run in running]


def run_exists(tracking_uri: str | None, run_id: str) -> bool:
    """Whether the store at `tracking_uri` holds the run `run_id`.

    Raises:
        SASRecError: when the store cannot answer (unreachable, refused credentials, other
            server errors): that is not "no such run".
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    try:
        MlflowClient(uri).get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        status = getattr(err, "get_http_status_code", lambda: None)()
        hint = (
            "check the credentials (MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
            "MLFLOW_TRACKING_TOKEN)"
            if status in (401, 403) or err.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED")
            else "check that the server is up and reachable"
        )
        raise SASRecError(
            f"cannot look up MLflow run {run_id} at {redact(uri)} ({err.error_code}): {hint}"
        ) from err
    return True


def log_params(params: dict[str, Any]) -> None:
    """Log parameters of the active run in one call."""
    import mlflow

    mlflow.log_params(params)


def outage_seconds() -> float:
    """How long to keep retrying an MLflow server that does not answer."""
    return float(os.environ.get(OUTAGE_SECONDS_ENV, DEFAULT_OUTAGE_SECONDS))


def log_metrics_once(
    metrics: dict[str, float], sections: tuple[tuple[str, str], ...] = TRAINING_SECTIONS
) -> None:
    """Log those of `metrics` that the active run does not hold yet (a rerun adds none twice).

    Their MLflow names are `mlflow_key`'s, by `sections`.
    """
    import mlflow

    held = mlflow.get_run(mlflow.active_run().info.run_id).data.metrics
    named = ((mlflow_key(k, sections), v) for k, v in metrics.items())
    missing = {key: float(v) for key, v in named}
    missing = {key: value for key, value in missing.items() if key not in held}
    if missing:
        mlflow.log_metrics(missing)


def logged_model_uri(run_id: str) -> str | None:
    """The URI of the model the run has logged (`models:/<model id>`), or None."""
    import mlflow

    outputs = mlflow.get_run(run_id).outputs
    logged = outputs.model_outputs if outputs else []
    return f"models:/{logged[0].model_id}" if logged else None


def log_artifacts(local_dir: str | Path, artifact_path: str) -> None:
    """Upload a directory to the active run's artifacts."""
    import mlflow

    mlflow.log_artifacts(str(local_dir), artifact_path=artifact_path)


def set_tags(tags: dict[str, str]) -> None:
    """Tag the active run."""
    import mlflow

    mlflow.set_tags(tags)


def code_version() -> dict[str, str]:
    """The package version and, from $SASREC_GIT_COMMIT or a git checkout, the commit.

    Keys are the run's param names, in the `code/` group.
    """
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
    return {"code/version": __version__, "code/git_commit": commit}


def mlflow_client(tracking_uri: str | None) -> Any:
    """An MlflowClient of the tracking server and its model registry."""
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
