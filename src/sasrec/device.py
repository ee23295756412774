"""Device selection, and the check that GPUs a job was given can be used."""

import os
import warnings

import torch

from sasrec.errors import SASRecError


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available, else CPU; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SASRecError("device 'cuda' was asked for but no CUDA GPU is visible; use auto or cpu")
    return torch.device(name)


def require_cuda(num_gpus: int) -> None:
    """Fail at once, saying why, when `num_gpus` GPUs were given but CUDA cannot use them.

    A pod on a GPU node whose driver is older than the torch wheel's CUDA, or that got no
    device, would otherwise train on the CPU while the GPU is billed.

    Raises:
        SASRecError: naming the cause (CPU-only torch, driver too old, no device visible,
            fewer devices than asked for) and what to do.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()  # warns when the driver is too old
    visible = torch.cuda.device_count() if available else 0
    if visible >= num_gpus:
        return
    if torch.version.cuda is None:
        why = f"this torch ({torch.__version__}) is a CPU-only build; install the CUDA wheel"
    elif caught:
        why = " ".join(str(caught[0].message).split())
    elif available:
        why = f"only {visible} CUDA device(s) are visible"
    else:
        devices = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        why = (
            f"no CUDA device is visible (CUDA_VISIBLE_DEVICES={devices}); check that the node "
            "runs the NVIDIA device plugin and the pod's GPU request"
        )
    raise SASRecError(
        f"{num_gpus} GPU(s) were requested (gpu_count) but CUDA cannot use them: {why}. "
        'Set gpu_count=0 to train on the CPU, or hparams {"device": "cpu"} to ignore the GPUs'
    )
