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

from sasrec.errors import SASRecError
from sasrec.storage import login, redact

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "sasrec"
# How long training waits for an MLflow server that went away (restart, proxy errors)
# before it gives up on the run's metrics; override with $SASREC_MLFLOW_OUTAGE_SECONDS.
OUTAGE_SECONDS_ENV = "SASREC_MLFLOW_OUTAGE_SECONDS"
DEFAULT_OUTAGE_SECONDS = 900.0
GIT_COMMIT_TAG = "mlflow.source.git.commit"  # MLflow's own tag for the code revision


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """`tracking_uri`, else $MLFLOW_TRACKING_URI, else MLflow's default sqlite store.

    The default (`sqlite:///mlflow.db`) is relative to the working directory; it is made
    absolute here so that every step of a local pipeline run writes to the same store.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path('mlflow.db').resolve()}"


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
) -> Iterator[str]:
    """Start a new MLflow run, or resume `run_id`; yields the run id.

    Args:
        tracking_uri: See `resolve_tracking_uri`.
        experiment: Experiment of a new run (created when missing).
        run_name: Name of a new run.
        run_id: An existing run to log into instead of starting one.
        parent_run_id: Make a new run a child of this one (a sweep's trials).
    """
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    # MLflow prints the run's link with the tracking URI as given, a password included;
    # the link is logged here instead, without it.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(uri)
    if run_id is None:
        mlflow.set_experiment(experiment)
    with mlflow.start_run(
        run_id=run_id, run_name=None if run_id else run_name, parent_run_id=parent_run_id
    ) as run:
        if uri.startswith(("http://", "https://")):
            experiment_id = run.info.experiment_id
            log.info(
                "MLflow run: %s/#/experiments/%s/runs/%s",
                redact(uri).rstrip("/"), experiment_id, run.info.run_id,
            )  # fmt: skip
        yield run.info.run_id


def start_parent_run(
    tracking_uri: str | None, experiment: str, run_name: str | None, params: dict[str, Any]
) -> str:
    """Create a run that stays open while its children (a sweep's trials) run elsewhere.

    `finish_parent_run` closes it. Returns its run id.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name=run_name)
    client.log_batch(
        run.info.run_id,
        params=[mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items()],
    )
    return run.info.run_id


def finish_parent_run(
    tracking_uri: str | None, run_id: str, metrics: dict[str, float], tags: dict[str, str]
) -> None:
    """Log a sweep's outcome to its parent run and close the run."""
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
    client.set_terminated(run_id)


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
    """Per-epoch metrics sent to MLflow by a background thread that outlasts server outages.

    Training hands each epoch's metrics over and goes on at once. The thread sends them in
    order, one `log_batch` each, retrying with backoff while the server is away (restarted,
    behind a proxy answering 502) for up to `outage_seconds`. `close` waits until all are
    sent, so a run ends with every epoch's metrics; each keeps the time it was measured.
    """

    def __init__(self, tracking_uri: str | None, run_id: str, max_outage_s: float) -> None:
        from mlflow import MlflowClient

        uri = resolve_tracking_uri(tracking_uri)
        self._client = MlflowClient(uri)
        self._login = login(uri)  # kept out of messages
        self._run_id = run_id
        self._max_outage_s = max_outage_s
        self._batches: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._send_all, name="mlflow-metrics", daemon=True)
        self._thread.start()

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        """Queue one epoch's metrics (a `train.MetricsCallback`)."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        batch = [Metric(mlflow_key(k), float(v), timestamp, step) for k, v in metrics.items()]
        self._batches.put(batch)

    def _send_all(self) -> None:
        retrying = tenacity.Retrying(
            wait=tenacity.wait_exponential(multiplier=0.5, max=15),
            stop=tenacity.stop_after_delay(self._max_outage_s),
            before_sleep=lambda state: log.warning(
                "MLflow did not take the metrics (%s); training goes on, retrying",
                self._without_login(str(state.outcome.exception())),
            ),
            reraise=True,
        )
        while (batch := self._batches.get()) is not None:
            if self._error is None:
                try:
                    retrying(self._client.log_batch, self._run_id, metrics=batch)
                except Exception as err:  # any failure: close() reports it
                    self._error = err

    def _without_login(self, text: str) -> str:
        return text.replace(f"{self._login}@", "") if self._login else text

    def close(self) -> None:
        """Wait until every queued batch is sent.

        Raises:
            SASRecError: when the server stayed away longer than the outage allowance.
        """
        self._batches.put(None)
        self._thread.join()
        if self._error is not None:
            raise SASRecError(
                f"MLflow did not answer for {self._max_outage_s:.0f} s "
                f"({self._without_login(str(self._error))}); the "
                f"model was still written, set ${OUTAGE_SECONDS_ENV} to wait longer"
            ) from self._error


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


def log_recommender_model(model_dir: Path, registered_model_name: str | None = None) -> str:
    """Log the model directory as the pyfunc of `sasrec.serving_model`; returns its model URI.

    The pyfunc answers in original item ids (see `sasrec.serving_model`). It is logged from
    code, with the `sasrec` package as its code and the model directory as its one
    artifact: loading it unpickles nothing. Requirements are pinned to this environment's
    versions instead of being inferred (which loads the model once more in a subprocess).
    """
    from importlib.metadata import version

    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types.schema import (
        AnyType,
        Array,
        ColSpec,
        DataType,
        ParamSchema,
        ParamSpec,
        Schema,
    )

    import sasrec
    from sasrec.serving import DEFAULT_K, HISTORY, Recommender

    package_dir = Path(sasrec.__file__).parent
    recommender = Recommender(model_dir)
    ids = Array(DataType.string)
    signature = ModelSignature(
        # Any, not Array(string): the model checks the history itself, so that a bad one
        # is answered with 400 by MLServer too (MLflow's own check fails there with 500).
        inputs=Schema([ColSpec(AnyType(), HISTORY, required=False)]),
        outputs=Schema([
            ColSpec(ids, "item_ids"), ColSpec(Array(DataType.double), "scores"),
            ColSpec(DataType.string, "source"), ColSpec(ids, "unknown_ids"),
            *([ColSpec(ids, "titles")] if recommender.titles is not None else []),
        ]),
        params=ParamSchema([ParamSpec("k", DataType.long, DEFAULT_K)]),
    )  # fmt: skip
    example = pd.DataFrame({HISTORY: [recommender.item_ids[1:4]]})  # three known items
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(package_dir / "serving_model.py"),
        artifacts={"model_dir": str(model_dir)},
        code_paths=[str(package_dir)],
        signature=signature,
        input_example=(example, {"k": DEFAULT_K}),
        pip_requirements=[
            f"{name}=={version(name).split('+')[0]}"
            for name in ("mlflow", "torch", "numpy", "pandas", "pyarrow")
        ],
        registered_model_name=registered_model_name,
    )
    return info.model_uri


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
    if path := flavor.get("artifacts", {}).get("model_dir", {}).get("path"):
        return local / path
    run_id = client.get_model_version(name, version).run_id
    if run_id and any(a.path == "model_dir" for a in client.list_artifacts(run_id)):
        return Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="model_dir", dst_path=str(dst / "run")
            )
        )
    raise SASRecError(
        f"version {version} of {name}, the champion, is not a model of this pipeline (no "
        "model directory in it or its run): it cannot be scored; move the alias by hand"
    )
