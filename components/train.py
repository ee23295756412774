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
    checkpoint_root: str,
    pipeline_run_id: str,
    trial: int,
    parent_run_id: str,
    train_nodes: int,
    train_image: str,
    gpu_type: str,
    node_cpu: str,
    node_memory: str,
    mlflow_secret: str,
    storage_secret: str,
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
        checkpoint_root: Where checkpoints outlive the pod (gs://, s3:// or a mounted
            folder); empty: beside the model output.
        pipeline_run_id: The pipeline run: a retried pod finds its checkpoint by it (and
            the trial number); a tag on the MLflow run.
        trial: The trial number in the sweep (0 without one).
        parent_run_id: The sweep's parent MLflow run; empty without a grid.
        train_nodes: Nodes to train on; above 1 this task runs a Kubeflow TrainJob of
            train_nodes x num_processes processes and follows it (needs checkpoint_root).
        train_image: The image of the TrainJob's nodes: this component's own.
        gpu_type: Kubernetes resource name of the GPUs each node requests.
        node_cpu: CPU of each node (request = limit).
        node_memory: Memory of each node (request = limit).
        mlflow_secret: Secret with MLflow credentials, passed to the nodes.
        storage_secret: Secret with object-store credentials, passed to the nodes.
        model: Directory with weights, config and item vocabulary.
    """
    import os

    from sasrec.config import parse_hparams
    from sasrec.errors import exit_on_error
    from sasrec.training.step import pipeline_checkpoint_dir, train_step, train_trial_step
    from sasrec.training.trainjob import NodeResources, NodesRequest

    nodes = NodesRequest(
        train_nodes, train_image, NodeResources(node_cpu, node_memory, num_processes, gpu_type),
        mlflow_secret, storage_secret,
        mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", ""),
    )  # fmt: skip

    # In a sweep, a trial that cannot train is recorded in its output and the others go on.
    step = train_trial_step if parent_run_id else train_step
    with exit_on_error("train"):
        summary = step(
            sequences_dir=sequences.path, model_dir=model.path, hparams=parse_hparams(hparams),
            tracking_uri=mlflow_tracking_uri or None, experiment=mlflow_experiment,
            run_name=mlflow_run_name,
            checkpoint_dir=pipeline_checkpoint_dir(checkpoint_root, pipeline_run_id, trial),
            num_processes=num_processes, gpus=num_processes,
            parent_run_id=parent_run_id or None, trial=trial if parent_run_id else None,
            pipeline_run_id=pipeline_run_id, nodes=nodes,
        )  # fmt: skip
    model.metadata.update(summary)
