"""A training run's state: what a checkpoint holds, to resume exactly where it stopped."""

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from sasrec.config import HParams
from sasrec.model import SASRec
from sasrec.training import distributed

if TYPE_CHECKING:  # it imports this module
    from sasrec.training.item_rows import SparseItemTable

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


class WeightAverage:
    """An exponential moving average of a model's weights, updated after each step.

    With a constant learning rate and heavy dropout the weights keep moving around a good
    point; their average is a better model than the last weights (docs/benchmarks.md). The
    first update copies the weights; the decay of update n after it is
    min(decay, (1 + n) / (10 + n)), as in TensorFlow's moving averages: a short memory at
    first, so that a run of few steps is not averaged towards its random initial weights.

    An update given `items` averages only those rows of the item table (`LAZY_ROWS`), for
    steps that changed no other row (`sasrec.training.item_rows`). A row left behind is
    brought up to date exactly when it is next used or the average is read: its weights did
    not change meanwhile, so k updates moved its average by the product of their decays
    towards them, and the running sum of log decays gives that product.
    """

    LAZY_ROWS = ("item_emb.weight", "item_bias")

    def __init__(self, model: SASRec, decay: float) -> None:
        self.module = copy.deepcopy(model)
        self.decay = decay
        self.updates = 0
        self.log_decay = 0.0  # sum of the log decays of every update so far
        # `log_decay` when each item row was last brought up to date: (num_items + 1,)
        self.row_log_decay = torch.zeros(
            model.item_bias.shape, dtype=torch.float64, device=model.item_bias.device
        )
        self.behind = False  # whether some row waits for `catch_up`

    def _pairs(self, model: SASRec) -> tuple[list, list]:
        """(average, weights) tensor pairs: the dense ones, then the item table's."""
        current = dict(model.named_parameters())
        dense, lazy = [], []
        for name, averaged in self.module.named_parameters():
            (lazy if name in self.LAZY_ROWS else dense).append(
                (averaged.detach(), current[name].detach())
            )
        return dense, lazy

    @torch.no_grad()
    def catch_up(self, model: SASRec, items: torch.Tensor | None = None) -> None:
        """Bring the rows `items` (None: all) of the item table's average up to date."""
        if not self.behind:
            return
        rows = slice(None) if items is None else items
        lag = (self.log_decay - self.row_log_decay[rows]).exp()  # product of missed decays
        for averaged, weights in self._pairs(model)[1]:
            factor = lag.to(averaged.dtype).view(-1, *[1] * (averaged.dim() - 1))
            averaged[rows] = weights[rows] + factor * (averaged[rows] - weights[rows])
        self.row_log_decay[rows] = self.log_decay
        self.behind = items is not None

    @torch.no_grad()
    def update_parameters(self, model: SASRec, items: torch.Tensor | None = None) -> None:
        """Average in `model`'s weights after a step that changed the rows `items` (None: all)."""
        dense, lazy = self._pairs(model)
        if self.updates == 0:
            for averaged, weights in dense + lazy:
                averaged.copy_(weights)
            self.updates = 1
            return
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        if items is None:
            self.catch_up(model)
            pairs = dense + lazy
        else:
            pairs = dense
            for averaged, weights in lazy:
                averaged[items] = decay * averaged[items] + (1 - decay) * weights[items]
        # The foreach ops update every tensor in one call each; per tensor they cost more
        # than the update itself.
        averaged_tensors = [averaged for averaged, _ in pairs]
        torch._foreach_mul_(averaged_tensors, decay)
        torch._foreach_add_(averaged_tensors, [w for _, w in pairs], alpha=1 - decay)
        self.updates += 1
        self.log_decay += math.log(decay)
        rows = slice(None) if items is None else items
        self.row_log_decay[rows] = self.log_decay
        self.behind = self.behind or items is not None

    def state_dict(self) -> dict[str, Any]:
        """For the checkpoint: the averaged weights and where each item row stands."""
        return {
            "module": self.module.state_dict(),
            "updates": self.updates,
            "log_decay": self.log_decay,
            "row_log_decay": self.row_log_decay,
            "behind": self.behind,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`."""
        self.module.load_state_dict(state["module"])
        self.updates, self.log_decay = state["updates"], state["log_decay"]
        self.row_log_decay.copy_(state["row_log_decay"])
        self.behind = state["behind"]


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
    average: WeightAverage | None = None  # the weights' moving average, with `ema_decay`
    # Updates the item table row by row; then `optimizer` holds every other weight.
    item_table: "SparseItemTable | None" = None
    epoch: int = 0  # the last whole epoch
    epoch_metrics: dict[str, float] = field(default_factory=dict)  # of `epoch`
    # Every whole epoch's metrics as measured: {"epoch", "timestamp_ms", "metrics"}. They
    # travel with the checkpoint until MLflow has them (see `tracking.EpochMetricsSender`).
    history: list[dict[str, Any]] = field(default_factory=list)
    partial: EpochProgress | None = None  # of epoch `epoch + 1`, when SIGTERM stopped it

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer of the run."""
        return [self.optimizer] + ([self.item_table.optimizer] if self.item_table else [])

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
            "item_optimizer": self.item_table.optimizer.state_dict() if self.item_table else {},
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
        "identity", "epoch", "epoch_metrics", "model", "optimizer", "item_optimizer", "average",
        "generator",
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
        if self.item_table is not None:
            self.item_table.optimizer.load_state_dict(checkpoint["item_optimizer"])
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


def weight_average(model: SASRec, decay: float) -> WeightAverage | None:
    """The moving average of `model`'s weights with `decay`; None when decay is 0 (off)."""
    return WeightAverage(model, decay) if decay > 0.0 else None


# 2: a random state per process; 3: metrics history, mid-epoch place; 4: row-wise item updates
CHECKPOINT_FORMAT = 4


def checkpoint_identity(hparams: HParams, fingerprint: str) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed.

    The data (training and validation) and every hparam that shapes the run. The device
    may change between attempts, and `max_epochs` too under a constant learning rate;
    under the cosine schedule it sets every epoch's rate, so a change starts afresh.
    `transition_weight` acts only once training has ended.
    """
    free = {"device", "transition_weight"}
    free |= {"max_epochs"} if hparams.lr_schedule == "constant" else set()
    fixed = {k: v for k, v in dataclasses.asdict(hparams).items() if k not in free}
    return {"format": CHECKPOINT_FORMAT, "hparams": fixed, "data_fingerprint": fingerprint}
