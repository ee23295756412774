"""Row-wise updates of the item table, so that a training step costs what its batch uses.

A dense step reads and writes the whole (num_items + 1, D) embedding table and its bias
three times (gradient, Adam, weight average) whatever the batch: at a catalogue of millions
of items that is most of the step. Here a step gathers the R rows its batch uses (inputs,
targets, sampled negatives) into small leaf tensors, computes the loss on them, and
updates only those rows, with Adam's arithmetic for the rows in between kept:

- `RowAdam`: dense Adam keeps moving a row on its momentum at steps without a gradient for
  it (m decays by beta1, v by beta2, each step). Row-wise, those k steps are applied in one
  go when the row is next used, or the epoch ends: their sum is a geometric series. Plain
  "lazy" Adam (`torch.optim.SparseAdam`), which drops them, lost 5% of full-catalogue
  NDCG@10 on the paper's data (docs/benchmarks.md).
- The weight average stays exact for weights that stand still (`WeightAverage` brings a
  row up to date when it is used again, and every row before the average is read).

Under torchrun every process gathers the rows of the whole batch, so that all hold the same
rows and their gradients can be averaged like DDP's.
"""

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from sasrec.model import PAD, SASRec
from sasrec.training import distributed
from sasrec.training.state import WeightAverage


@dataclass(frozen=True)
class BatchRows:
    """The item-table rows a batch uses, copied into leaf tensors that collect its gradient."""

    items: torch.Tensor  # (R,) sorted item ids; item 0 (padding) first
    weight: torch.Tensor  # (R, D) embedding rows, requires grad
    bias: torch.Tensor  # (R,) item biases, requires grad


class SparseItemTable:
    """Row-wise Adam steps on a model's item table, and the weight average's rows kept exact."""

    def __init__(self, model: SASRec, lr: float, average: WeightAverage | None) -> None:
        self.model, self.average = model, average
        self.optimizer = RowAdam([model.item_emb.weight, model.item_bias], lr)

    PARAMETERS = ("item_emb.weight", "item_bias")  # what it updates, by name in the model

    def gather(self, *ids: torch.Tensor) -> tuple[BatchRows, list[torch.Tensor]]:
        """The rows of every item in `ids`, and each of `ids` renumbered into those rows.

        Padding stays 0: row 0 is always item 0, so masks on PAD read the renumbered ids alike.
        """
        weight, bias = self.model.item_emb.weight, self.model.item_bias
        flat = [torch.zeros(1, dtype=torch.long, device=weight.device)]
        flat += [t.to(weight.device).flatten() for t in ids]
        items, renumbered = torch.unique(torch.cat(flat), sorted=True, return_inverse=True)
        # The rows move first by the steps they missed, as dense Adam moved them meanwhile;
        # their average sees the weights they had so far.
        self.optimizer.catch_up(items[1:])
        if self.average is not None:
            self.average.catch_up(self.model, items[1:])
        pieces = renumbered[1:].split([t.numel() for t in ids])
        rows = BatchRows(
            items, weight.detach()[items].requires_grad_(), bias.detach()[items].requires_grad_()
        )
        return rows, [piece.view(t.shape) for piece, t in zip(pieces, ids, strict=True)]

    def step(self, rows: BatchRows) -> None:
        """Apply the gradient of `rows` to the item table: one row-wise Adam step.

        The gradients are first averaged over processes, as DDP does for the other weights.
        Padding's row never moves, as nn.Embedding's padding_idx keeps it.
        """
        grads = [rows.weight.grad, rows.bias.grad]
        if any(grad is None for grad in grads):
            raise RuntimeError("step needs the gradient of every gathered row: call backward")
        _, world = distributed.rank_and_world()
        if world > 1:
            for grad in grads:
                dist.all_reduce(grad)
                grad /= world
        used = rows.items != PAD  # padding's row never moves
        self.optimizer.step(rows.items[used], [grad[used] for grad in grads])

    def finish_epoch(self) -> None:
        """Bring every row, and its average, to where dense training has them now."""
        self.optimizer.catch_up()
        if self.average is not None:
            self.average.catch_up(self.model)


class RowAdam:
    """Adam (the dense optimizer's betas and eps) on the rows each step has gradients for.

    A row a step does not use is moved when it is next used (or `catch_up` is called) by
    the k steps it missed: dense Adam would move it by lr * m_j / sqrt(v_j) at each, with
    m_j = beta1^j m and v_j = beta2^j v, a geometric series of ratio beta1 / sqrt(beta2).
    Within it, eps and the bias corrections of those k steps are left out: both matter only
    in the first hundred steps or for rows whose v has decayed to nothing.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, betas=(0.9, 0.98), eps=1e-8) -> None:
        self.params, self.betas, self.eps = params, betas, eps
        self.param_groups = [{"lr": lr}]  # set per epoch like a torch optimizer's
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        rows = params[0].shape[0]
        self.last_step = torch.zeros(rows, dtype=torch.long, device=params[0].device)
        self.steps = 0
        self._corrections: torch.Tensor | None = None  # see `_travel`

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grads: list[torch.Tensor]) -> None:
        """One Adam step of `rows` (R,) with their gradients (R, ...) for each param."""
        self.catch_up(rows)
        self.steps += 1
        beta1, beta2 = self.betas
        lr = self.param_groups[0]["lr"]
        step_size = lr / (1 - beta1**self.steps)
        bias_correction2 = math.sqrt(1 - beta2**self.steps)
        for param, m, v, grad in zip(
            self.params, self.exp_avg, self.exp_avg_sq, grads, strict=True
        ):
            m_rows = m[rows].lerp_(grad, 1 - beta1)
            v_rows = v[rows].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            m[rows], v[rows] = m_rows, v_rows
            denom = (v_rows.sqrt() / bias_correction2).add_(self.eps)
            param[rows] -= step_size * m_rows / denom
        self.last_step[rows] = self.steps

    @torch.no_grad()
    def catch_up(self, rows: torch.Tensor | None = None) -> None:
        """Apply to `rows` (None: all) the momentum of the steps since each last moved."""
        beta1, beta2 = self.betas
        index = slice(None) if rows is None else rows
        since = self.last_step[index]
        if not bool((since < self.steps).any()):
            return
        travel = self._travel(since).float()
        missed = (self.steps - since).float()
        lr = self.param_groups[0]["lr"]
        for param, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            shape = (-1, *[1] * (param.dim() - 1))
            m_rows, v_rows = m[index], v[index]
            param[index] -= lr * travel.view(shape) * m_rows / (v_rows.sqrt() + self.eps)
            m[index] = m_rows * (beta1**missed).view(shape)
            v[index] = v_rows * (beta2**missed).view(shape)
        self.last_step[index] = self.steps

    # Adam's bias corrections make c(n) (see `_travel`) differ from 1 before step FLAT_AFTER
    # (beta2^n > 1e-18); a row's missed steps past TAIL add less than ratio^TAIL = 0.002 each.
    FLAT_AFTER, TAIL = 2048, 64

    def _travel(self, since: torch.Tensor) -> torch.Tensor:
        """sum_{j=1..k} ratio^j c(s + j) per row: s = `since`, k = steps - s, ratio = b1/sqrt(b2).

        c(n) = sqrt(1 - b2^n) / (1 - b1^n), the bias corrections of step n: dense Adam
        moves a row without gradient by lr * ratio^j * c(s + j) * m_s / sqrt(v_s) at its
        j-th missed step. The sum is a geometric series plus the part of c above 1, read
        from a table of s < FLAT_AFTER and j <= TAIL (differences of prefix sums would
        cancel catastrophically).
        """
        beta1, beta2 = self.betas
        ratio = beta1 / math.sqrt(beta2)
        if self._corrections is None:
            s = torch.arange(self.FLAT_AFTER, dtype=torch.float64).unsqueeze(1)
            j = torch.arange(1, self.TAIL + 1, dtype=torch.float64)
            c = (1 - beta2 ** (s + j)).sqrt() / (1 - beta1 ** (s + j))  # (FLAT_AFTER, TAIL)
            terms = ratio**j * (c - 1)
            self._corrections = torch.cat([terms.new_zeros(len(s), 1), terms.cumsum(1)], 1)
        table = self._corrections.to(since.device)
        missed = (self.steps - since).double()
        geometric = ratio * (1 - ratio**missed) / (1 - ratio)
        early = since < self.FLAT_AFTER
        row = since.clamp(max=self.FLAT_AFTER - 1)
        column = (self.steps - since).clamp(max=self.TAIL)
        return geometric + torch.where(early, table[row, column], 0.0)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Nothing to clear: the gradients come with each step."""
        del set_to_none

    def state_dict(self) -> dict[str, Any]:
        """For the checkpoint."""
        return {
            "lr": self.param_groups[0]["lr"], "steps": self.steps, "last_step": self.last_step,
            "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`."""
        self.param_groups[0]["lr"], self.steps = state["lr"], state["steps"]
        self.last_step.copy_(state["last_step"])
        for mine, saved in zip(
            self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"], strict=True
        ):
            mine.copy_(saved)
