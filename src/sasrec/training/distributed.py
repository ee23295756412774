"""Data-parallel training under torchrun: process group set-up and the few collectives used.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; without them everything here is a no-op and
training runs in one process.
"""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (or a PyTorchJob)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Whether this process writes files and logs to MLflow."""
    return rank_and_world()[0] == 0


def mean_over_processes(value: torch.Tensor) -> float:
    """The mean of a scalar tensor over all processes."""
    _, world = rank_and_world()
    if world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world
    return float(value)


def any_process(flag: bool, device: torch.device) -> bool:
    """Whether `flag` is true in any process: all of them then take the same branch."""
    _, world = rank_and_world()
    if world == 1:
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value)


def gather_objects(value: T) -> list[T]:
    """Every process's `value`, by rank (`[value]` outside torchrun)."""
    _, world = rank_and_world()
    if world == 1:
        return [value]
    gathered: list[T] = [value] * world
    dist.all_gather_object(gathered, value)
    return gathered


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the torchrun process group when launched by torchrun (NCCL on GPUs, else gloo)."""
    if not launched_by_torchrun() or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This process's GPU under torchrun (`cuda:LOCAL_RANK`), else `device` unchanged."""
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def relaunch_with_torchrun(
    num_processes: int, module_args: list[str], standalone: bool = True
) -> None:
    """Run `python -m <module_args>` as `num_processes` torchrun workers on this node.

    Standalone: this node alone. Otherwise torchrun reads the number of nodes, this node's
    rank and the rendezvous from PET_NNODES, PET_NODE_RANK, PET_MASTER_ADDR and
    PET_MASTER_PORT, as Kubeflow Trainer sets them on each node of a TrainJob.

    SIGTERM is passed on to torchrun, which passes it to the workers: they save their
    place (see `sasrec.training.preemption`) and this process then raises `Preempted` too.

    Raises:
        subprocess.CalledProcessError: when a worker fails (its log is above).
        Preempted: when SIGTERM stopped the workers.
    """
    from sasrec.training.preemption import Preempted, StopRequests

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *(["--standalone"] if standalone else []),
        f"--nproc-per-node={num_processes}",
        "-m",
        *module_args,
    ]
    with StopRequests() as stop:
        workers = subprocess.Popen(command)
        stop.on_request = lambda: workers.send_signal(signal.SIGTERM)
        code = workers.wait()
    if stop.requested:
        raise Preempted("the torchrun workers checkpointed their place")
    if code:
        raise subprocess.CalledProcessError(code, command)
