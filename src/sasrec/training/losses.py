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

from functools import partial

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
# Above this many (positions x items) logits in a batch (1 GiB in float32), `ce` computes
# its loss chunk by chunk instead of materialising them.
MAX_CE_LOGITS = 2**28


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


class ChunkedSoftmaxLoss(torch.autograd.Function):
    """`full_softmax_loss` of `hidden @ weight.T + bias` without the (T, num_items + 1) logits.

    The log-sum-exp is accumulated over chunks of items and the backward pass computes each
    chunk's logits again, so memory holds one (T, chunk) block at a time: the whole-catalogue
    loss for catalogues of millions of items (the Books category: 4.4M), whose logits would
    take hundreds of GB.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        targets: torch.Tensor,
        chunk: int,
    ) -> torch.Tensor:
        """Mean loss () of hidden (T, D), weight (N + 1, D), bias (N + 1,), targets (T,)."""
        hidden, weight, bias = hidden.float(), weight.float(), bias.float()
        log_normalizer = torch.full((len(hidden),), float("-inf"), device=hidden.device)
        for start in range(0, len(weight), chunk):
            logits = _chunk_logits(hidden, weight, bias, start, chunk)
            log_normalizer = torch.logaddexp(log_normalizer, logits.logsumexp(1))
        scored = targets != IGNORED
        items = targets.clamp(min=PAD)  # IGNORED rows read padding, then count 0
        target_logits = (hidden * weight[items]).sum(1) + bias[items]
        ctx.save_for_backward(hidden, weight, bias, targets, log_normalizer)
        ctx.chunk = chunk
        return ((log_normalizer - target_logits) * scored).sum() / scored.sum()

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_loss: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        """Gradients: (softmax - one_hot(target)) / T per scored row, chunk by chunk."""
        hidden, weight, bias, targets, log_normalizer = ctx.saved_tensors
        scored = targets != IGNORED
        row_scale = grad_loss * scored / scored.sum()  # (T,)
        grad_hidden = torch.zeros_like(hidden)
        grad_weight, grad_bias = torch.zeros_like(weight), torch.zeros_like(bias)
        for start in range(0, len(weight), ctx.chunk):
            logits = _chunk_logits(hidden, weight, bias, start, ctx.chunk)
            # softmax of the chunk's items, weighted per row: (T, chunk)
            probabilities = (logits - log_normalizer.unsqueeze(1)).exp_().mul_(row_scale[:, None])
            grad_hidden.addmm_(probabilities, weight[start : start + ctx.chunk])
            grad_weight[start : start + ctx.chunk] = probabilities.T @ hidden
            grad_bias[start : start + ctx.chunk] = probabilities.sum(0)
        items, scale = targets[scored], row_scale[scored]
        grad_hidden[scored] -= scale.unsqueeze(1) * weight[items]
        grad_weight.index_add_(0, items, -scale.unsqueeze(1) * hidden[scored])
        grad_bias.index_add_(0, items, -scale)
        return grad_hidden, grad_weight, grad_bias, None, None


def _chunk_logits(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, start: int, chunk: int
) -> torch.Tensor:
    """(T, chunk) logits of items start..start + chunk - 1; padding (item 0) is -inf."""
    logits = torch.addmm(bias[start : start + chunk], hidden, weight[start : start + chunk].T)
    if start == 0:
        logits[:, PAD] = float("-inf")
    return logits


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

    def __init__(
        self, model: SASRec, loss: str, gbce_beta: float = 1.0, max_logits: int = MAX_CE_LOGITS
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss {loss!r} is not one of {LOSSES}")
        self.model, self.loss, self.gbce_beta = model, loss, gbce_beta
        self.max_logits = max_logits

    def forward(
        self,
        item_ids: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor,
        item_rows: torch.Tensor | None = None,
        bias_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean loss over target positions.

        Args:
            item_ids: (B, L) input items, left-padded with 0.
            positives: (B, L) the next item at each position (0 where there is none).
            negatives: from `sample_negatives`: (B, L, N) for `bce` and `gbce`, (N,) for
                `sampled_softmax`, ignored for `ce`.
            item_rows: (R, D) the embeddings of the batch's items, when the ids above number
                rows of it instead of items (`sasrec.training.item_rows`); not for `ce`.
            bias_rows: (R,) their biases, with `item_rows`.
        """
        is_target = (item_ids != PAD) & (positives != PAD)  # (B, L)
        if self.loss == "ce":
            if item_rows is not None:
                raise ValueError("loss ce scores every item: it takes the whole item table")
            # Every position is scored and the non-targets ignored: boolean indexing has a
            # data-dependent shape, which makes a GPU wait at every batch and breaks
            # torch.compile's graph. Batches are trimmed to their longest row, so little
            # of the work is padding.
            hidden = self.model.encode(item_ids).flatten(0, 1)  # (B * L, D)
            targets = positives.masked_fill(~is_target, IGNORED).flatten()
            weight = self.model.output_part(self.model.item_emb.weight)  # (N + 1, D)
            bias = self.model.item_bias
            if len(hidden) * len(weight) > self.max_logits:
                chunk = max(1, self.max_logits // len(hidden))
                return ChunkedSoftmaxLoss.apply(hidden, weight, bias, targets, chunk)
            return full_softmax_loss(hidden @ weight.T + bias, targets)
        targets = positives[is_target]  # (T,)
        if item_rows is None:
            embed, bias = self.model.item_emb, self.model.item_bias
        else:
            embed, bias = partial(F.embedding, weight=item_rows), bias_rows
        if self.loss in PER_POSITION_NEGATIVES:
            # One embedding lookup for inputs, positives and negatives: each lookup's backward
            # fills a dense (num_items + 1, D) gradient, which is costly on CPU.
            ids = torch.cat([item_ids.unsqueeze(-1), positives.unsqueeze(-1), negatives], dim=-1)
            vectors = embed(ids)  # (B, L, 2 + N, W)
            hidden = self.model.encode(item_ids, vectors[:, :, 0])[is_target]  # (T, D)
            candidates = self.model.output_part(vectors[is_target][:, 1:])  # (T, 1 + N, D)
            logits = torch.einsum("td,tkd->tk", hidden, candidates)  # (T, 1 + N)
            logits = logits + bias[ids[is_target][:, 1:]]
            pos_logits, neg_logits = logits[:, 0], logits[:, 1:]
            clashes = negatives[is_target] == targets.unsqueeze(1)  # (T, N)
        else:
            ids = torch.cat([item_ids.flatten(), targets, negatives])
            vectors = embed(ids)
            num_inputs = item_ids.numel()
            input_vectors = vectors[:num_inputs].view(*item_ids.shape, -1)  # (B, L, W)
            output_vectors = self.model.output_part(vectors[num_inputs:])
            target_vectors = output_vectors[: len(targets)]  # (T, D)
            hidden = self.model.encode(item_ids, input_vectors)[is_target]  # (T, D)
            pos_logits = (hidden * target_vectors).sum(1) + bias[targets]  # (T,)
            neg_vectors = output_vectors[len(targets) :]  # (N, D)
            neg_logits = torch.addmm(bias[negatives], hidden, neg_vectors.T)  # (T, N)
            clashes = negatives.unsqueeze(0) == targets.unsqueeze(1)  # (T, N)
        neg_logits = neg_logits.float().masked_fill(clashes, float("-inf"))
        pos_logits = pos_logits.float()
        if self.loss == "bce":
            return bce_loss(pos_logits, neg_logits)
        if self.loss == "gbce":
            return gbce_loss(pos_logits, neg_logits, self.gbce_beta)
        return sampled_softmax_loss(pos_logits, neg_logits)
