"""The scoring engine: rank each held-out item against the whole catalogue and sampled items.

Shared by validation (training), evaluation, promotion and recommendation.

Protocols, all on the same users:
- full catalogue: the held-out item against every item, the user's history excluded
  (`exclude_history=False` keeps it) -> `ndcg@k`, `hit@k`, `mrr@k`;
- the paper's: against 100 items drawn uniformly from those the user never interacted
  with -> `sampled_*`;
- popularity-sampled: 100 such items drawn in proportion to their training count plus
  one, a harder and less biased variant -> `popsampled_*`.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import polars as pl
import torch

from sasrec.data import schema
from sasrec.errors import SASRecError
from sasrec.metrics import RANK_CAP, chunk_maxima, rank_of_targets, ranking_metrics, top_k
from sasrec.model import PAD, exclude_items, users_per_batch
from sasrec.tensors import pad_left

TOP_K = 10  # recommendations kept per user: coverage, popularity of what is recommended
# Scores every item as the next one: (B, L) item indices, left-padded -> (B, N + 1).
Scorer = Callable[[torch.Tensor], torch.Tensor]
NUM_SAMPLED_NEGATIVES = 100  # the paper's protocol
SAMPLING_SEED = 2018


SAMPLING_BLOCK = 1024  # users per draw of the sampled protocols' negatives
_SEEN = "_seen"  # a held-out frame's column of all its user's items


def sample_unseen_items(
    seen: torch.Tensor,
    num_items: int,
    num_samples: int,
    generator: torch.Generator,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Items in 1..num_items that are not in each row of `seen` (with replacement).

    Args:
        seen: (B, S) items each user interacted with, 0-padded.
        num_items: Catalogue size.
        num_samples: Samples per row.
        generator: CPU generator, so that a seed fixes the samples.
        weights: (num_items + 1,) sampling weights (index 0 ignored); None for uniform.

    Returns:
        (B, num_samples) int64 tensor.
    """
    seen_sorted = seen.sort(dim=1).values
    num_unseen = num_items - (seen_sorted != PAD).sum(1)
    if (num_unseen < 1).any():
        raise SASRecError("a user has interacted with every item: no negatives to sample")

    def draw(count: int) -> torch.Tensor:
        if weights is None:
            return torch.randint(1, num_items + 1, (count,), generator=generator)
        return torch.multinomial(weights[1:], count, replacement=True, generator=generator) + 1

    samples = draw(len(seen) * num_samples).view(len(seen), num_samples)
    while True:
        # A sample is seen when the sorted row holds it at its insertion point.
        at = torch.searchsorted(seen_sorted, samples).clamp(max=seen_sorted.shape[1] - 1)
        rejected = seen_sorted.gather(1, at) == samples
        if not rejected.any():
            return samples
        samples[rejected] = draw(int(rejected.sum()))


@dataclass(frozen=True)
class HeldOutRanks:
    """Per-user results of one scorer on (a shard of) one split, by row of the split."""

    full: torch.Tensor  # (U,) 0-based rank in the full catalogue
    sampled: torch.Tensor | None  # (U,) among uniform negatives
    popsampled: torch.Tensor | None  # (U,) among popularity-sampled negatives
    top_items: torch.Tensor  # (U, TOP_K) the scorer's recommendations, history excluded
    rows: torch.Tensor  # (U,) the split's rows these are of, ascending

    def metrics(self, prefix: str = "", ks: tuple[int, ...] | None = None) -> dict[str, float]:
        """Flat metrics of every protocol that was run."""
        kwargs = {"ks": ks} if ks else {}
        metrics = ranking_metrics(self.full, prefix=prefix, **kwargs)
        for protocol, ranks in (("sampled_", self.sampled), ("popsampled_", self.popsampled)):
            if ranks is not None:
                metrics |= ranking_metrics(ranks, prefix=prefix + protocol, **kwargs)
        return metrics

    def to_frame(self) -> pl.DataFrame:
        """One row per user: what a scoring shard hands to the merge (`from_frames`)."""
        optional = {"sampled": self.sampled, "popsampled": self.popsampled}
        return pl.DataFrame({
            "row": self.rows.numpy(),
            "full": self.full.numpy(),
            **{name: ranks.numpy() for name, ranks in optional.items() if ranks is not None},
            "top_items": self.top_items.numpy(),
        })  # fmt: skip

    @classmethod
    def from_frames(cls, frames: list[pl.DataFrame]) -> "HeldOutRanks":
        """The ranks of every shard's `to_frame`, as one, by row."""
        whole = pl.concat([frame for frame in frames if frame.height]).sort("row")

        def column(name: str) -> torch.Tensor | None:
            return (
                torch.from_numpy(whole[name].to_numpy(writable=True))
                if name in whole.columns
                else None
            )

        return cls(
            column("full"), column("sampled"), column("popsampled"),
            torch.from_numpy(whole["top_items"].to_numpy(writable=True)), column("row"),
        )  # fmt: skip


def shard_range(num_rows: int, block: int, shard: int, shards: int) -> range:
    """The rows of shard `shard` of `shards`: whole blocks of `block` rows, as even as can be.

    Shards are contiguous runs of whole blocks, so each block, and each batch of a block,
    holds the same rows as in one process: the shards' results are those of one process.
    """
    if not 0 <= shard < shards:
        raise SASRecError(f"shard {shard} is not one of 0..{shards - 1}")
    num_blocks = -(-num_rows // block)
    first, last = (num_blocks * s // shards for s in (shard, shard + 1))
    return range(first * block, min(last * block, num_rows))


@torch.no_grad()
def rank_held_out(
    scorer: Scorer,
    held_out: pl.DataFrame,
    num_items: int,
    max_len: int,
    popularity: torch.Tensor | None = None,
    num_sampled: int = NUM_SAMPLED_NEGATIVES,
    exclude_history: bool = True,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    seed: int = SAMPLING_SEED,
    seen: pl.Series | None = None,
    shard: tuple[int, int] = (0, 1),
) -> HeldOutRanks:
    """Rank each user's held-out item under every protocol.

    Args:
        scorer: The model (in eval mode) or a baseline.
        held_out: Rows of `schema.HELD_OUT_SCHEMA`.
        num_items: Catalogue size.
        max_len: Most recent items the scorer sees.
        popularity: (num_items + 1,) training counts; enables the popularity-sampled protocol.
        num_sampled: Negatives of the sampled protocols; 0 skips them.
        exclude_history: Exclude the user's history items from the full-catalogue ranking.
        device: Where scores are computed.
        batch_size: Users scored at once, at most SAMPLING_BLOCK, fewer for catalogues
            of millions of items (`users_per_batch`). 256 keeps a batch's (B, N + 1) scores
            of a 25K-item catalogue under glibc's 32 MB mmap threshold, so they reuse
            memory instead of page-faulting fresh pages in for every batch.
        seed: Seed of the negative samples (uniform and popularity draws use their own).
        seen: Per row of `held_out`, all the items of its user (also later ones): sampled
            negatives avoid them. None: the row's history and target.
        shard: (shard, shards): rank only this shard's users (`shard_range`); its ranks are
            what one process gives those users.
    """
    batch_size = users_per_batch(batch_size, num_items)
    weights = None if popularity is None else popularity.double() + 1.0  # every item drawable
    # Score users in order of history length so each batch is only as wide as its longest
    # history (most are short), then put the results back in the frame's order.
    if seen is not None:
        held_out = held_out.with_columns(seen.alias(_SEEN))
    order = np.argsort(held_out[schema.HISTORY].list.len().to_numpy(), kind="stable")
    mine = shard_range(len(order), SAMPLING_BLOCK, *shard)
    order = order[mine.start : mine.stop]
    by_length = held_out[order]
    ranks: dict[str, list[torch.Tensor]] = {"full": [], "sampled": [], "popsampled": []}
    top_items = []
    # Negatives are drawn per block of SAMPLING_BLOCK users, from generators seeded by the
    # block's place: neither the scoring batch size nor the shard changes them. Scores are
    # computed per batch_size users within a block.
    for index, block in enumerate(by_length.iter_slices(SAMPLING_BLOCK)):
        history = pad_left(block[schema.HISTORY])  # (B, S) the whole history, for exclusion
        targets = torch.from_numpy(block[schema.TARGET].to_numpy(writable=True)).long()  # (B,)
        candidates = {}  # per sampled protocol: (B, 1 + num_sampled), the target first
        if num_sampled:
            user_items = (
                torch.cat([history, targets.unsqueeze(1)], dim=1)
                if seen is None
                else pad_left(block[_SEEN])
            )
            draw = partial(_candidates, targets, user_items, num_items, num_sampled)
            block_seed = seed * 2**32 + 2 * (mine.start // SAMPLING_BLOCK + index)
            candidates["sampled"] = draw(torch.Generator().manual_seed(block_seed))
            if weights is not None:
                candidates["popsampled"] = draw(
                    torch.Generator().manual_seed(block_seed + 1), weights
                )
        for start in range(0, block.height, batch_size):
            rows = slice(start, start + batch_size)
            scores = scorer(history[rows, -max_len:].to(device)).float()  # (b, N + 1)
            for protocol, protocol_candidates in candidates.items():
                ranks[protocol].append(_ranks_among(scores, protocol_candidates[rows]))
            excluded = history[rows].to(device) if exclude_history else None
            exclude_items(scores, excluded)
            maxima = chunk_maxima(scores)  # (b, N // TOP_K_CHUNK), shared by both passes
            top_items.append(top_k(scores, min(TOP_K, num_items), maxima)[1].cpu())
            full_ranks = rank_of_targets(scores, targets[rows].to(device), RANK_CAP, maxima)
            ranks["full"].append(full_ranks.cpu())
    rows = torch.from_numpy(order).long()
    by_row = rows.argsort()

    def in_row_order(
        values: list[torch.Tensor], empty: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        return torch.cat(values)[by_row] if values else empty

    nothing = torch.empty(0, dtype=torch.long)  # ranks of a shard without users
    return HeldOutRanks(
        full=in_row_order(ranks["full"], nothing),
        sampled=in_row_order(ranks["sampled"]),
        popsampled=in_row_order(ranks["popsampled"]),
        top_items=in_row_order(top_items, nothing.view(0, min(TOP_K, num_items))),
        rows=rows[by_row],
    )


def _candidates(
    targets: torch.Tensor,
    seen: torch.Tensor,
    num_items: int,
    num_sampled: int,
    generator: torch.Generator,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, 1 + num_sampled): each target, then `num_sampled` items its user has not seen."""
    negatives = sample_unseen_items(seen, num_items, num_sampled, generator, weights)
    return torch.cat([targets.unsqueeze(1), negatives], dim=1)


def _ranks_among(scores: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """(B,) rank of each row's first candidate (its target) among its candidates."""
    candidates = candidates.to(scores.device)
    zeros = torch.zeros(len(candidates), dtype=torch.long, device=scores.device)
    return rank_of_targets(scores.gather(1, candidates), zeros).cpu()


def item_popularity(train: pl.DataFrame, num_items: int) -> torch.Tensor:
    """(num_items + 1,) float counts of each item in the training sequences; 0 at padding."""
    items = train[schema.ITEM_SEQUENCE].explode().drop_nulls().to_numpy(writable=True)
    items = torch.from_numpy(items)
    return torch.bincount(items.long(), minlength=num_items + 1).double()


def user_items(held_out: pl.DataFrame, known: pl.DataFrame) -> pl.Series:
    """All the items of each row's user, in `held_out`'s row order."""
    return held_out.select(schema.USER_ID).join(
        known, on=schema.USER_ID, how="left", maintain_order="left"
    )[schema.HISTORY]


def require_finite(metrics: dict[str, float]) -> None:
    """Refuse to write a metric that is not finite, or a ranking metric outside [0, 1].

    Raises:
        SASRecError: naming the metrics.
    """
    ranking = ("ndcg@", "hit@", "mrr@", "coverage@")
    bad = {
        name: value
        for name, value in metrics.items()
        if not math.isfinite(value) or (any(m in name for m in ranking) and not 0 <= value <= 1)
    }
    if bad:
        raise SASRecError(f"metrics out of range, not written: {bad}; check the model and data")
