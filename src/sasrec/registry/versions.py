"""Model versions in MLflow's registry: registration, aliases, tags, a version's files."""

from pathlib import Path

from sasrec.errors import SASRecError
from sasrec.filenames import MODEL_DIR_ARTIFACT
from sasrec.tracking import mlflow_client, resolve_tracking_uri


def register_run_model(tracking_uri: str | None, name: str, run_id: str) -> str:
    """Register the model logged by `run_id` under `name`; returns the version.

    A retried step finds the version it registered before instead of adding another.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
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
        return str(mlflow_client(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def set_alias(tracking_uri: str | None, name: str, alias: str, version: str) -> None:
    """Point `alias` of `name` at `version`."""
    mlflow_client(tracking_uri).set_registered_model_alias(name, alias, version)


def tag_version(tracking_uri: str | None, name: str, version: str, tags: dict[str, str]) -> None:
    """Set tags on one model version."""
    client = mlflow_client(tracking_uri)
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

    client = mlflow_client(tracking_uri)
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
