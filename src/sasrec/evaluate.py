"""The evaluate step: rank each held-out item against the whole catalogue and sampled items."""

import logging
from pathlib import Path

import polars as pl
import torch

from sasrec.checkpoint import load_model_dir
from sasrec.data import schema
from sasrec.device import resolve_device
from sasrec.errors import SASRecError
from sasrec.io import write_json
from sasrec.metrics import rank_of_targets, ranking_metrics
from sasrec.model import PAD, SASRec
from sasrec.tensors import pad_left

log = logging.getLogger(__name__)

NUM_SAMPLED_NEGATIVES = 100  # the paper's protocol
SAMPLING_SEED = 2018


def sample_unseen_items(
    seen: torch.Tensor, num_items: int, num_samples: int, generator: torch.Generator
) -> torch.Tensor:
    """Uniform items in 1..num_items that are not in each row of `seen` (with replacement).

    Args:
        seen: (B, S) items each user interacted with, 0-padded.
        num_items: Catalogue size.
        num_samples: Samples per row.
        generator: CPU generator, so that a seed fixes the samples.

    Returns:
        (B, num_samples) int64 tensor.
    """
    seen_sorted = seen.sort(dim=1).values
    num_unseen = num_items - (seen_sorted != PAD).sum(1)
    if (num_unseen < 1).any():
        raise SASRecError("a user has interacted with every item: no negatives to sample")
    samples = torch.randint(1, num_items + 1, (len(seen), num_samples), generator=generator)
    while True:
        # A sample is seen when the sorted row holds it at its insertion point.
        at = torch.searchsorted(seen_sorted, samples).clamp(max=seen_sorted.shape[1] - 1)
        rejected = seen_sorted.gather(1, at) == samples
        if not rejected.any():
            return samples
        redraw = torch.randint(1, num_items + 1, (int(rejected.sum()),), generator=generator)
        samples[rejected] = redraw


def full_catalogue_ranks(
    scores: torch.Tensor, history: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Rank of each target among all items except padding and the user's history.

    Args:
        scores: (B, N + 1) scores of every item; modified in place.
        history: (B, S) items to exclude, 0-padded.
        targets: (B,) held-out items.

    Returns:
        (B,) 0-based ranks.
    """
    scores[:, PAD] = float("-inf")
    scores.scatter_(1, history, float("-inf"))
    return rank_of_targets(scores, targets)


@torch.no_grad()
def rank_held_out(
    model: SASRec,
    held_out: pl.DataFrame,
    num_sampled: int = NUM_SAMPLED_NEGATIVES,
    batch_size: int = 1024,
    seed: int = SAMPLING_SEED,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """0-based ranks of each user's held-out item.

    Args:
        model: A model in eval mode.
        held_out: Rows of `schema.HELD_OUT_SCHEMA`.
        num_sampled: Negatives for the sampled protocol; 0 skips it.
        batch_size: Users scored at once.
        seed: Seed of the negative samples.

    Returns:
        (full-catalogue ranks with history items excluded, sampled ranks or None), each (U,).
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    # Score users in order of history length so each batch is only as wide as its longest
    # history (most are short), then put the ranks back in the frame's order.
    order = held_out[schema.HISTORY].list.len().arg_sort().to_numpy(writable=True)
    by_length = held_out[order]
    order = torch.from_numpy(order).long()
    full_ranks, sampled_ranks = [], []
    for batch in by_length.iter_slices(batch_size):
        history = pad_left(batch[schema.HISTORY])  # (B, S) the whole history, for exclusion
        targets = torch.from_numpy(batch[schema.TARGET].to_numpy(writable=True)).long()  # (B,)
        inputs = history[:, -model.config.max_len :].to(device)
        scores = model.score_all_items(inputs).float()  # (B, N + 1)
        if num_sampled:
            seen = torch.cat([history, targets.unsqueeze(1)], dim=1)
            negatives = sample_unseen_items(seen, model.config.num_items, num_sampled, generator)
            candidates = torch.cat([targets.unsqueeze(1), negatives], dim=1).to(device)
            zeros = torch.zeros(len(batch), dtype=torch.long, device=device)
            sampled_ranks.append(rank_of_targets(scores.gather(1, candidates), zeros).cpu())
        full_ranks.append(
            full_catalogue_ranks(scores, history.to(device), targets.to(device)).cpu()
        )
    return _unsort(torch.cat(full_ranks), order), (
        _unsort(torch.cat(sampled_ranks), order) if num_sampled else None
    )


def _unsort(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Undo a permutation: values[i] belongs to row order[i]."""
    restored = torch.empty_like(values)
    restored[order] = values
    return restored


def evaluate_model(
    model_dir: str | Path, sequences_dir: str | Path, out_dir: str | Path, device: str = "auto"
) -> dict[str, float]:
    """Test-set metrics of a model artifact, written to `out_dir/metrics.json`.

    Full-catalogue metrics (`ndcg@10`, `hit@10`) rank the held-out item against every item
    the user has not interacted with; the paper's sampled metrics (`sampled_ndcg@10`,
    `sampled_hit@10`) rank it among 100 uniformly sampled such items.
    """
    test = pl.read_parquet(Path(sequences_dir) / schema.TEST_FILE)
    model = load_model_dir(model_dir, resolve_device(device))
    full_ranks, sampled_ranks = rank_held_out(model, test)
    metrics = {
        **ranking_metrics(full_ranks),
        **ranking_metrics(sampled_ranks, prefix="sampled_"),
        "num_test_users": float(len(full_ranks)),
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    write_json(metrics, Path(out_dir) / schema.METRICS_FILE)
    log.info("test metrics: %s", metrics)
    return metrics
