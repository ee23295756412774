"""Next-item training objectives for SASRec.

Every position with an input item and a next item is a target. The four losses:

- `bce`: the paper's. Binary cross-entropy of the next item against one (or
  `num_negatives`) uniformly sampled items per position.
- `sampled_softmax`: softmax cross-entropy of the next item against `num_negatives`
  uniformly sampled items shared by the whole batch.
- `ce`: softmax cross-entropy over the whole catalogue ("SASRec+", Klenitskiy & Vasilev 2023).
- `gbce`: generalised BCE (gSASRec, Petrov & Macdonald 2023): BCE whose positive term is
  raised to the power beta, which corrects the overconfidence that negative sampling causes,
  against `num_negatives` uniformly sampled items per position.

A sampled negative equal to the position's next item is masked out.
"""

import torch
import torch.nn.functional as F
from torch import nn

from sasrec.config import LOSSES
from sasrec.model import PAD, SASRec

# bce and gbce draw negatives for every position, as their papers do. Sharing one set per
# batch would sum each shared negative's push-down over every target of the batch, which
# made gbce collapse (docs/benchmarks.md); the softmax weighs negatives by probability.
PER_POSITION_NEGATIVES = ("bce", "gbce")
IGNORED = -100  # target of a position that is not scored (F.cross_entropy's ignore_index)


def bce_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(pos) plus mean of -log(1 - sigmoid(neg)).

    pos_logits: (T,); neg_logits: (T, N), -inf where masked.
    """
    return F.softplus(-pos_logits).mean() + F.softplus(neg_logits).mean()


def gbce_beta(num_negatives: int, num_items: int, calibration: float) -> float:
    """The beta of gSASRec: alpha * (t * (1 - 1/alpha) + 1/alpha), alpha the sampling rate."""
    alpha = num_negatives / max(num_items - 1, 1)
    return alpha * (calibration * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """The loss of gSASRec: BCE with the positive probability raised to beta, mean over 1 + N terms.

    -log(sigmoid(pos) ** beta) = beta * softplus(-pos), which avoids the power's underflow.
    pos_logits: (T,); neg_logits: (T, N), -inf where masked.
    """
    per_target = beta * F.softplus(-pos_logits) + F.softplus(neg_logits).sum(1)
    return per_target.mean() / (1 + neg_logits.shape[1])


def sampled_softmax_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the positive among itself and the negatives.

    pos_logits: (T,); neg_logits: (T, N), -inf where masked.
    """
    logits = torch.cat([pos_logits.unsqueeze(1), neg_logits], dim=1)  # (T, 1 + N)
    return (torch.logsumexp(logits, dim=1) - pos_logits).mean()


def full_softmax_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the catalogue, averaged over the targets that are not `IGNORED`.

    logits: (T, num_items + 1), column 0 padding; targets: (T,).
    """
    logits = logits.float()
    logits[:, PAD] = float("-inf")
    return F.cross_entropy(logits, targets, ignore_index=IGNORED)


def sample_negatives(
    loss: str,
    num_negatives: int,
    positives_shape: torch.Size,
    num_items: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Uniform negatives in 1..num_items for a batch whose positives have `positives_shape`.

    (B, L, N) per position for `bce` and `gbce`; (N,) shared by the batch for
    `sampled_softmax`; `ce` needs none and gets an empty tensor.
    """
    if loss == "ce":
        return torch.empty(0, dtype=torch.long)
    per_position = loss in PER_POSITION_NEGATIVES
    shape = (*positives_shape, num_negatives) if per_position else (num_negatives,)
    return torch.randint(1, num_items + 1, shape, generator=generator)


class NextItemObjective(nn.Module):
    """The training loss as a module, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: SASRec, loss: str, gbce_beta: float = 1.0) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss {loss!r} is not one of {LOSSES}")
        self.model, self.loss, self.gbce_beta = model, loss, gbce_beta

    def forward(
        self, item_ids: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
    ) -> torch.Tensor:
        """Mean loss over target positions.

        Args:
            item_ids: (B, L) input items, left-padded with 0.
            positives: (B, L) the next item at each position (0 where there is none).
            negatives: from `sample_negatives`: (B, L, N) for `bce` and `gbce`, (N,) for
                `sampled_softmax`, ignored for `ce`.
        """
        is_target = (item_ids != PAD) & (positives != PAD)  # (B, L)
        if self.loss == "ce":
            # Every position is scored and the non-targets ignored: boolean indexing has a
            # data-dependent shape, which makes a GPU wait at every batch and breaks
            # torch.compile's graph. Batches are trimmed to their longest row, so little
            # of the work is padding.
            hidden = self.model.encode(item_ids).flatten(0, 1)  # (B * L, D)
            logits = hidden @ self.model.item_emb.weight.T + self.model.item_bias
            return full_softmax_loss(logits, positives.masked_fill(~is_target, IGNORED).flatten())
        targets = positives[is_target]  # (T,)
        bias = self.model.item_bias
        if self.loss in PER_POSITION_NEGATIVES:
            # One embedding lookup for inputs, positives and negatives: each lookup's backward
            # fills a dense (num_items + 1, D) gradient, which is costly on CPU.
            ids = torch.cat([item_ids.unsqueeze(-1), positives.unsqueeze(-1), negatives], dim=-1)
            vectors = self.model.item_emb(ids)  # (B, L, 2 + N, D)
            hidden = self.model.encode(item_ids, vectors[:, :, 0])[is_target]  # (T, D)
            candidates = vectors[is_target][:, 1:]  # (T, 1 + N, D)
            logits = torch.einsum("td,tkd->tk", hidden, candidates)  # (T, 1 + N)
            logits = logits + bias[ids[is_target][:, 1:]]
            pos_logits, neg_logits = logits[:, 0], logits[:, 1:]
            clashes = negatives[is_target] == targets.unsqueeze(1)  # (T, N)
        else:
            ids = torch.cat([item_ids.flatten(), targets, negatives])
            vectors = self.model.item_emb(ids)
            num_inputs = item_ids.numel()
            input_vectors = vectors[:num_inputs].view(*item_ids.shape, -1)  # (B, L, D)
            target_vectors = vectors[num_inputs : num_inputs + len(targets)]  # (T, D)
            hidden = self.model.encode(item_ids, input_vectors)[is_target]  # (T, D)
            pos_logits = (hidden * target_vectors).sum(1) + bias[targets]  # (T,)
            neg_vectors = vectors[num_inputs + len(targets) :]  # (N, D)
            neg_logits = torch.addmm(bias[negatives], hidden, neg_vectors.T)  # (T, N)
            clashes = negatives.unsqueeze(0) == targets.unsqueeze(1)  # (T, N)
        neg_logits = neg_logits.float().masked_fill(clashes, float("-inf"))
        pos_logits = pos_logits.float()
        if self.loss == "bce":
            return bce_loss(pos_logits, neg_logits)
        if self.loss == "gbce":
            return gbce_loss(pos_logits, neg_logits, self.gbce_beta)
        return sampled_softmax_loss(pos_logits, neg_logits)
