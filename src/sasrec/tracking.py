"""MLflow tracking: one run per pipeline run, shared by the train and evaluate steps.

MLflow is imported inside functions so that the library imports without it.
"""

import contextlib
import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tenacity

from sasrec.errors import SASRecError, ServiceUnavailable, one_line
from sasrec.filenames import MODEL_DIR_ARTIFACT
from sasrec.storage import login, redact

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


def mlflow_key(name: str) -> str:
    """MLflow metric names allow no `@`: `ndcg@10` becomes `ndcg_at_10`."""
    return name.replace("@", "_at_")


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
        mlflow.set_experiment(experiment)
    run = mlflow.start_run(
        run_id=run_id, run_name=None if run_id else run_name, parent_run_id=parent_run_id,
        tags=None if run_id else tags,
    )  # fmt: skip
    if uri.startswith(("http://", "https://")):
        log.info(
            "MLflow run: %s/#/experiments/%s/runs/%s",
            redact(uri).rstrip("/"), run.info.experiment_id, run.info.run_id,
        )  # fmt: skip
    try:
        yield run.info.run_id
    except BaseException as err:
        # SIGTERM (`Preempted`): the retried pod resumes this run. The error that ended the
        # run is what the user sees, even when MLflow cannot take the status now.
        _end_run("KILLED" if isinstance(err, SystemExit) else "FAILED")
        raise
    mlflow.end_run()


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
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
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
    client = _registry(tracking_uri)
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


class BufferedMetricsLogger:
    """Per-epoch metrics sent to MLflow, exactly once, by a background thread.

    Training hands over each epoch's record (`TrainingState.history`: epoch, the time it
    was measured, its metrics) and goes on at once; the same records travel with the
    checkpoint. The thread sends each metric not yet in the run, one `log_batch` per
    epoch with the epoch as step and the original timestamp, retrying with backoff while
    the server is away (restarted, behind a proxy answering 502) for up to
    `max_outage_s`. A resumed run (`resumed`) first reads which (metric, step) pairs the
    run already holds, so that a record handed over again is sent only where missing.
    """

    def __init__(
        self, tracking_uri: str | None, run_id: str, max_outage_s: float, resumed: bool = False
    ) -> None:
        from mlflow import MlflowClient

        uri = resolve_tracking_uri(tracking_uri)
        self._client = MlflowClient(uri)
        self._uri = redact(uri)
        self._login = login(uri)  # kept out of messages
        self._run_id = run_id
        self._max_outage_s = max_outage_s
        self._resumed = resumed
        self._on_server: dict[int, set[str]] = {}  # step -> metric keys the run holds
        self._records: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._failing_since: float | None = None  # time.monotonic() of the first failure
        self._thread = threading.Thread(target=self._send_all, name="mlflow-metrics", daemon=True)
        self._thread.start()

    def put(self, record: dict[str, Any]) -> None:
        """Queue one epoch's record: {"epoch": int, "timestamp_ms": int, "metrics": {...}}."""
        self._records.put(record)

    def _retrying(self) -> tenacity.Retrying:
        def outage_too_long(retry_state: tenacity.RetryCallState) -> bool:
            del retry_state
            since = self._failing_since
            return since is not None and time.monotonic() - since >= self._max_outage_s

        def note_failure(retry_state: tenacity.RetryCallState) -> None:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            log.warning(
                "MLflow did not take the metrics (%s); training goes on, retrying",
                self._without_login(str(retry_state.outcome.exception())),
            )

        return tenacity.Retrying(
            wait=tenacity.wait_exponential(multiplier=0.5, max=15),
            stop=outage_too_long,
            before_sleep=note_failure,
            reraise=True,
        )

    def _read_on_server(self, keys: set[str]) -> None:
        for key in keys:
            for metric in self._client.get_metric_history(self._run_id, key):
                self._on_server.setdefault(metric.step, set()).add(key)

    def _send(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step, sent = record["epoch"], self._on_server.get(record["epoch"], set())
        batch = [
            Metric(key, float(value), record["timestamp_ms"], step)
            for key, value in ((mlflow_key(k), v) for k, v in record["metrics"].items())
            if key not in sent
        ]
        if batch:
            self._client.log_batch(self._run_id, metrics=batch)
            self._on_server.setdefault(step, set()).update(m.key for m in batch)

    def _send_all(self) -> None:
        retrying = self._retrying()
        while (record := self._records.get()) is not None:
            if self._error is not None:
                continue
            try:
                if self._resumed:
                    keys = {mlflow_key(k) for k in record["metrics"]}
                    retrying(self._read_on_server, keys)
                    self._resumed = False
                retrying(self._send, record)
                self._failing_since = None
            except Exception as err:  # any failure: close() reports it
                self._error = err

    def _without_login(self, text: str) -> str:
        return text.replace(f"{self._login}@", "") if self._login else text

    def close(self) -> None:
        """Wait until every queued record is sent, within the outage allowance.

        The allowance is a deadline: `max_outage_s` after the server stopped answering
        (or after this call, when it answers), whatever MLflow's own retries inside one
        call would take.

        Raises:
            ServiceUnavailable: when MLflow did not take every record in time. The records
                are in the checkpoint: a rerun sends what is missing.
        """
        self._records.put(None)
        start = self._failing_since or time.monotonic()
        self._thread.join(timeout=max(0.0, start + self._max_outage_s - time.monotonic()))
        if self._thread.is_alive() or self._error is not None:
            why = self._without_login(str(self._error)) if self._error else "no answer in time"
            raise ServiceUnavailable(
                f"MLflow at {self._uri} did not take the epoch metrics in "
                f"{self._max_outage_s:.0f} s ({why}); the model and the checkpoint are kept: "
                f"rerun the step to finish the logging, or set ${OUTAGE_SECONDS_ENV} to "
                "wait longer"
            ) from self._error

    def abandon(self, wait_s: float = 5.0) -> None:
        """Stop after what can be sent within `wait_s`: the rest is in the checkpoint."""
        self._records.put(None)
        self._thread.join(timeout=wait_s)


def log_metrics_once(metrics: dict[str, float]) -> None:
    """Log those of `metrics` that the active run does not hold yet (a rerun adds none twice)."""
    import mlflow

    held = mlflow.get_run(mlflow.active_run().info.run_id).data.metrics
    missing = {key: float(v) for key, v in ((mlflow_key(k), v) for k, v in metrics.items())}
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


def _registry(tracking_uri: str | None) -> Any:
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def register_run_model(tracking_uri: str | None, name: str, run_id: str) -> str:
    """Register the model logged by `run_id` under `name`; returns the version.

    A retried step finds the version it registered before instead of adding another.
    """
    from mlflow.exceptions import MlflowException

    client = _registry(tracking_uri)
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if existing:
        return str(existing[0].version)
    (logged,) = client.get_run(run_id).outputs.model_outputs
    source = f"models:/{logged.model_id}"
    return str(client.create_model_version(name, source, run_id, model_id=logged.model_id).version)


def version_with_alias(tracking_uri: str | None, name: str, alias: str) -> str | None:
    """The version of `name` holding `alias`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_registry(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def set_alias(tracking_uri: str | None, name: str, alias: str, version: str) -> None:
    """Point `alias` of `name` at `version`."""
    _registry(tracking_uri).set_registered_model_alias(name, alias, version)


def tag_version(tracking_uri: str | None, name: str, version: str, tags: dict[str, str]) -> None:
    """Set tags on one model version."""
    client = _registry(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def download_model_dir(tracking_uri: str | None, name: str, version: str, dst: Path) -> Path:
    """The model directory of registered version `version` of `name`, downloaded under `dst`.

    A version registered by this release holds it as its pyfunc's `model_dir` artifact; one
    registered by an earlier release (MLflow's PyTorch flavour) has it in its run's
    `model_dir` artifacts.

    Raises:
        SASRecError: for a version with neither: not a model of this pipeline.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    client = _registry(tracking_uri)
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(dst / "v"))
    )
    try:
        flavor = Model.load(local).flavors.get("python_function", {})
    except (MlflowException, OSError):  # not an MLflow model at all
        flavor = {}
    if path := flavor.get("artifacts", {}).get(MODEL_DIR_ARTIFACT, {}).get("path"):
        return local / path
    run_id = client.get_model_version(name, version).run_id
    if run_id and any(a.path == MODEL_DIR_ARTIFACT for a in client.list_artifacts(run_id)):
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=MODEL_DIR_ARTIFACT, dst_path=str(dst / "run")
            )
        )
    raise SASRecError(
        f"version {version} of {name}, the champion, is not a model of this pipeline (no "
        "model directory in it or its run): it cannot be scored; move the alias by hand"
    )
