"""Train component: SASRec on the sequences, tracked in MLflow."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.images import image_uri


@dsl.component(base_image=image_uri("train"), install_kfp_package=False)
def train(
    sequences: Input[Dataset],
    hparams: dict,
    mlflow_tracking_uri: str,
    mlflow_experiment: str,
    mlflow_run_name: str,
    num_processes: int,
    registered_model_name: str,
    checkpoint_root: str,
    pipeline_run_id: str,
    model: Output[Model],
):
    """Train SASRec and write the self-describing model directory.

    Args:
        sequences: Output of the sequences component.
        hparams: Hyperparameter overrides (see sasrec.config.HParams).
        mlflow_tracking_uri: MLflow tracking URI; empty for $MLFLOW_TRACKING_URI or the default.
        mlflow_experiment: MLflow experiment of the run.
        mlflow_run_name: MLflow run name.
        num_processes: GPUs given to the task, one data-parallel process each (torchrun when
            > 1); 0 trains on the CPU.
        registered_model_name: Register the MLflow model under this name; empty: do not.
        checkpoint_root: Where checkpoints outlive the pod (gs://, s3:// or a mounted
            folder); empty: beside the model output.
        pipeline_run_id: The pipeline run: a retried pod finds its checkpoint by it.
        model: Directory with weights, config and item vocabulary.
    """
    from sasrec.config import parse_hparams
    from sasrec.errors import exit_on_error
    from sasrec.steps import pipeline_checkpoint_dir, train_step

    with exit_on_error("train"):
        summary = train_step(
            sequences.path, model.path, parse_hparams(hparams),
            mlflow_tracking_uri or None, mlflow_experiment, mlflow_run_name,
            checkpoint_dir=pipeline_checkpoint_dir(checkpoint_root, pipeline_run_id),
            num_processes=num_processes, registered_model_name=registered_model_name or None,
            gpus=num_processes,
        )  # fmt: skip
    model.metadata.update(summary)
