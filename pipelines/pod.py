"""How each task's pod is set up on a cluster: resources, scratch space, secrets, retries.

The defaults come from each step's peak RSS measured at full Video_Games scale
(docs/benchmarks.md), with headroom; the pipeline exposes CPU and memory as parameters.
Memory request and limit are equal, so a pod is not evicted for using what it asked for.
"""

import os
from dataclasses import dataclass
from typing import Any

from kfp import dsl, kubernetes

from components.images import image_pull_secrets
from sasrec.credentials import MLFLOW_CREDENTIALS, STORAGE_CREDENTIALS

MLFLOW_SECRET = "sasrec-mlflow"
STORAGE_SECRET = "sasrec-storage"
# Every task gets a disk-backed /tmp of its own: images run with a read-only root, and
# keep their caches there (docker/Dockerfile sets SASREC_CACHE_DIR=/tmp/sasrec-cache).
SCRATCH_MOUNT = "/tmp"
# Multi-GPU training (NCCL) needs more than Kubernetes' 64 MiB /dev/shm. An emptyDir size
# is fixed when the pipeline is compiled: TRAIN_SHM_SIZE=32Gi make compile-pipeline.
TRAIN_SHM_SIZE_ENV = "TRAIN_SHM_SIZE"
DEFAULT_TRAIN_SHM_SIZE = "16Gi"
# A preempted train pod is retried and resumes from its checkpoint (see checkpoint_root).
TRAIN_RETRY = {"num_retries": 3, "backoff_duration": "60s", "backoff_factor": 2.0}


@dataclass(frozen=True)
class StepResources:
    """CPU and memory (request = limit) and the size of the task's /tmp."""

    cpu: str
    memory: str
    scratch: str

    @property
    def resources(self) -> tuple[str, str, str]:
        """(cpu, memory, scratch), as `set_up` takes them."""
        return self.cpu, self.memory, self.scratch


# Measured peak RSS at full Video_Games scale (4.6M reviews, 2-core CPU, docs/benchmarks.md):
# download 0.42 GB, sequences 1.30 GB (5-core), evaluation 2.08 GiB (94.8K x 25.6K), CPU
# training 1.2 GB (paper data); the 0-core catalogue and a CUDA context need more.
DOWNLOAD = StepResources(cpu="2", memory="2Gi", scratch="50Gi")  # holds the download cache
SEQUENCES = StepResources(cpu="2", memory="6Gi", scratch="5Gi")
TRAIN = StepResources(cpu="8", memory="16Gi", scratch="10Gi")
EVALUATE = StepResources(cpu="4", memory="8Gi", scratch="5Gi")
# Planning trials and selecting the winner: MLflow calls and a copy of one model folder.
SMALL = StepResources(cpu="1", memory="2Gi", scratch="2Gi")


def set_up(
    task: dsl.PipelineTask,
    display_name: str,
    resources: tuple[Any, Any, str],
    cache: bool | None = False,
    mlflow_secret: Any = None,
    storage_secret: Any = None,
) -> dsl.PipelineTask:
    """Every task's pod in one call: its name, caching, resources, /tmp and the secrets it reads.

    Args:
        task: The task.
        display_name: Its name in the KFP UI.
        resources: (cpu, memory, scratch): request = limit, and the size of its /tmp.
        cache: Whether KFP may reuse an earlier output; None leaves KFP's default.
        mlflow_secret: The Kubernetes secret with MLflow credentials, for tasks that track.
        storage_secret: The one with object-store credentials, for tasks that read or write it.

    Returns:
        The task.
    """
    task.set_display_name(display_name)
    if cache is not None:
        task.set_caching_options(cache)
    run_locked_down(task, *resources)
    if storage_secret is not None:
        use_storage_secret(task, storage_secret)
    if mlflow_secret is not None:
        use_mlflow_secret(task, mlflow_secret)
    return task


def run_locked_down(task: dsl.PipelineTask, cpu: str, memory: str, scratch: str) -> None:
    """Requests and limits, a /tmp volume of `scratch` size, and the image pull secrets."""
    task.set_cpu_request(cpu).set_cpu_limit(cpu)
    task.set_memory_request(memory).set_memory_limit(memory)
    kubernetes.empty_dir_mount(task, "scratch", SCRATCH_MOUNT, size_limit=scratch)
    if image_pull_secrets():
        kubernetes.set_image_pull_secrets(task, list(image_pull_secrets()))


def mount_shared_memory(task: dsl.PipelineTask) -> None:
    """A memory-backed /dev/shm for NCCL (size: $TRAIN_SHM_SIZE at compile time)."""
    size = os.environ.get(TRAIN_SHM_SIZE_ENV) or DEFAULT_TRAIN_SHM_SIZE
    kubernetes.empty_dir_mount(task, "dshm", "/dev/shm", medium="Memory", size_limit=size)


def use_mlflow_secret(task: dsl.PipelineTask, secret_name: str) -> None:
    """MLflow credentials from a Kubernetes secret, when it exists (optional)."""
    _use_secret(task, secret_name, MLFLOW_CREDENTIALS)


def use_storage_secret(task: dsl.PipelineTask, secret_name: str) -> None:
    """Object-store credentials from a Kubernetes secret, when it exists (optional)."""
    _use_secret(task, secret_name, STORAGE_CREDENTIALS)


def _use_secret(task: dsl.PipelineTask, secret_name: str, keys: tuple[str, ...]) -> None:
    # Each key becomes the variable of its name; missing secrets and keys are skipped.
    kubernetes.use_secret_as_env(task, secret_name, {key: key for key in keys}, optional=True)
