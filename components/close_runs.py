"""Close-runs component: the pipeline's exit task, run whether the pipeline failed or not."""

from kfp import dsl

from components.images import image_uri


@dsl.component(base_image=image_uri("train"), install_kfp_package=False)
def close_runs(
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    pipeline_run_id: str,
    status: dsl.PipelineTaskFinalStatus,
) -> list:
    """End the MLflow runs this pipeline run left RUNNING: FAILED, or KILLED after a success.

    Args:
        mlflow_tracking_uri: MLflow tracking URI; empty for $MLFLOW_TRACKING_URI or the default.
        mlflow_experiment: MLflow experiment of the pipeline's runs.
        pipeline_run_id: The pipeline run whose MLflow runs (tagged with it) are closed.
        status: How the pipeline ended (set by KFP).

    Returns:
        The ids of the runs it closed.
    """
    from sasrec.errors import exit_on_error
    from sasrec.registry.steps import close_runs_step

    with exit_on_error("close-runs"):
        return close_runs_step(
            mlflow_tracking_uri or None, mlflow_experiment, pipeline_run_id, status.state
        )
