"""A training run's state: what a checkpoint holds, to resume exactly where it stopped."""

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

from sasrec.config import HParams
from sasrec.model import SASRec
from sasrec.training import distributed

log = logging.getLogger(__name__)

SELECTION_METRIC = "val_ndcg@10"


@dataclass
class EpochProgress:
    """How far an interrupted epoch got: enough to continue it exactly from the next batch."""

    plan_state: torch.Tensor  # the generator's state before the epoch drew its batch plan
    generator_state: torch.Tensor  # its state after the last batch done
    batches_done: int
    loss_sum: float  # of the batches that stepped
    steps: int  # batches that stepped (one too small for every process is skipped)

    def as_dict(self) -> dict[str, Any]:
        """For the checkpoint (tensors and plain values only)."""
        return dataclasses.asdict(self)


class EpochInterrupted(Exception):
    """An epoch stopped after a batch because a stop was requested."""

    def __init__(self, progress: EpochProgress) -> None:
        super().__init__(f"stopped after batch {progress.batches_done}")
        self.progress = progress


@dataclass
class BestSoFar:
    """Early-stopping state: the best validation result and the weights that gave it."""

    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    evals_without_gain: int = 0

    def update(self, model: SASRec, metrics: dict[str, float], epoch: int) -> None:
        """Keep `model`'s weights when `metrics` has a better validation NDCG@10."""
        if metrics[SELECTION_METRIC] > self.metrics.get(SELECTION_METRIC, -1.0):
            self.epoch, self.metrics = epoch, metrics
            self.state = copy.deepcopy(model.state_dict())
            self.evals_without_gain = 0
        else:
            self.evals_without_gain += 1


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's random state: dropout masks and negative samples draw from it."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0)
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    """Restore a `rng_state` (a checkpoint loaded onto a GPU holds it there: back to CPU)."""
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and state["cuda"].numel():
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


@dataclass
class TrainingState:
    """Everything an interrupted run needs to continue exactly where it stopped."""

    model: SASRec
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    best: BestSoFar
    average: AveragedModel | None = None  # the weights' moving average, with `ema_decay`
    epoch: int = 0  # the last whole epoch
    epoch_metrics: dict[str, float] = field(default_factory=dict)  # of `epoch`
    # Every whole epoch's metrics as measured: {"epoch", "timestamp_ms", "metrics"}. They
    # travel with the checkpoint until MLflow has them (see `tracking.EpochMetricsSender`).
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: EpochProgress | None = None  # of epoch `epoch + 1`, when SIGTERM stopped it

    @property
    def evaluated_model(self) -> SASRec:
        """What is validated and kept: the moving average of the weights when there is one."""
        return self.average.module if self.average is not None else self.model

    def to_checkpoint(
        self, identity: dict[str, Any], rng_states: list[dict[str, torch.Tensor]]
    ) -> dict[str, Any]:
        """A dict of tensors and plain values that `torch.load(weights_only=True)` reads.

        `rng_states` holds every process's `rng_state`, by rank: each has its own dropout.
        """
        return {
            "identity": identity,
            "epoch": self.epoch,
            "epoch_metrics": self.epoch_metrics,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "average": self.average.state_dict() if self.average is not None else {},
            "generator": self.generator.get_state(),
            "rng_states": rng_states,
            "best_epoch": self.best.epoch,
            "best_metrics": self.best.metrics,
            "best_state": self.best.state,
            "evals_without_gain": self.best.evals_without_gain,
            "history": self.history,
            "partial": self.partial.as_dict() if self.partial is not None else {},
        }

    CHECKPOINT_KEYS = frozenset({
        "identity", "epoch", "epoch_metrics", "model", "optimizer", "average", "generator",
        "rng_states", "best_epoch", "best_metrics", "best_state", "evals_without_gain",
        "history", "partial",
    })  # fmt: skip

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Load a `to_checkpoint` dict back (tensors move to the model's device).

        Each process takes its own random state; with another number of processes than
        the checkpoint's, each is seeded from the seed, its rank and the epoch instead.
        """
        self.epoch, self.epoch_metrics = checkpoint["epoch"], checkpoint["epoch_metrics"]
        self.history = checkpoint["history"]
        partial = checkpoint["partial"]
        self.partial = EpochProgress(**partial) if partial else None
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.average is not None:
            self.average.load_state_dict(checkpoint["average"])
        self.generator.set_state(checkpoint["generator"].cpu())  # a CPU generator
        rank, world = distributed.rank_and_world()
        device = next(self.model.parameters()).device
        if len(checkpoint["rng_states"]) == world:
            set_rng_state(checkpoint["rng_states"][rank], device)
        else:
            log.warning(
                "checkpoint made by %d processes, resumed by %d: dropout is reseeded, so the "
                "run is not bit-identical to an uninterrupted one",
                len(checkpoint["rng_states"]),
                world,
            )
            torch.manual_seed(int(self.generator.initial_seed()) + 1000 * self.epoch + rank)
        self.best = BestSoFar(
            checkpoint["best_epoch"],
            checkpoint["best_metrics"],
            checkpoint["best_state"],
            checkpoint["evals_without_gain"],
        )


def weight_average(model: SASRec, decay: float) -> AveragedModel | None:
    """An exponential moving average of `model`'s weights, updated each step; None if decay is 0.

    With a constant learning rate and heavy dropout the weights keep moving around a good
    point; their average is a better model than the last weights (docs/benchmarks.md). The
    decay of update n is min(decay, (1 + n) / (10 + n)), as in TensorFlow's moving averages:
    a short memory at first, so that a run of few steps is not averaged towards its random
    initial weights.
    """
    if decay == 0.0:
        return None

    def warmed_up_ema(
        averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor
    ) -> None:
        # One decay for all tensors, as a tensor on their device: no host sync for it. The
        # foreach ops update every tensor in one call each; per tensor they cost more than
        # the update itself.
        step_decay = torch.clamp((1 + num_averaged) / (10 + num_averaged), max=decay)
        torch._foreach_mul_(averaged, step_decay)
        torch._foreach_add_(averaged, torch._foreach_mul(current, 1 - step_decay))

    return AveragedModel(model, multi_avg_fn=warmed_up_ema, use_buffers=True)


CHECKPOINT_FORMAT = 3  # 2: a random state per process; 3: metrics history, mid-epoch place


def checkpoint_identity(hparams: HParams, fingerprint: str) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed.

    The data (training and validation) and every hparam that shapes the run. The device
    may change between attempts, and `max_epochs` too under a constant learning rate;
    under the cosine schedule it sets every epoch's rate, so a change starts afresh.
    """
    free = {"device"} | ({"max_epochs"} if hparams.lr_schedule == "constant" else set())
    fixed = {k: v for k, v in dataclasses.asdict(hparams).items() if k not in free}
    return {"format": CHECKPOINT_FORMAT, "hparams": fixed, "data_fingerprint": fingerprint}
