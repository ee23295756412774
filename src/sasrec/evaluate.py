"""The evaluate step: rank each held-out item against the whole catalogue and sampled items.

Protocols, all on the same users:
- full catalogue: the held-out item against every item, the user's history excluded
  (`exclude_history=False` keeps it) -> `ndcg@k`, `hit@k`, `mrr@k`;
- the paper's: against 100 items drawn uniformly from those the user never interacted
  with -> `sampled_*`;
- popularity-sampled: 100 such items drawn in proportion to their training count plus
  one, a harder and less biased variant -> `popsampled_*`.
"""

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import torch

from sasrec.data import schema
from sasrec.data.sequences import known_sequences
from sasrec.data.titles import item_labels
from sasrec.errors import SASRecError
from sasrec.inputs import read_sequences, require_same_catalogue
from sasrec.metrics import rank_of_targets, ranking_metrics, top_k
from sasrec.model import PAD, exclude_items, users_per_batch
from sasrec.report import Example, render_report
from sasrec.sweep import read_trials
from sasrec.tensors import pad_left

log = logging.getLogger(__name__)

NUM_SAMPLED_NEGATIVES = 100  # the paper's protocol
SAMPLING_SEED = 2018
PROMOTION_FILE = "promotion.json"  # the promote step's decision (see sasrec.promotion)
TOP_K = 10  # recommendations kept per user: coverage, popularity of what is recommended
SAMPLING_BLOCK = 1024  # users per draw of the sampled protocols' negatives
_SEEN = "_seen"  # a held-out frame's column of all its user's items

# Scores every item as the next one: (B, L) item indices, left-padded -> (B, N + 1).
Scorer = Callable[[torch.Tensor], torch.Tensor]


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
    """Per-user results of one scorer on one split, in the split's row order."""

    full: torch.Tensor  # (U,) 0-based rank in the full catalogue
    sampled: torch.Tensor | None  # (U,) among uniform negatives
    popsampled: torch.Tensor | None  # (U,) among popularity-sampled negatives
    top_items: torch.Tensor  # (U, TOP_K) the scorer's recommendations, history excluded

    def metrics(self, prefix: str = "", ks: tuple[int, ...] | None = None) -> dict[str, float]:
        """Flat metrics of every protocol that was run."""
        kwargs = {"ks": ks} if ks else {}
        metrics = ranking_metrics(self.full, prefix=prefix, **kwargs)
        for protocol, ranks in (("sampled_", self.sampled), ("popsampled_", self.popsampled)):
            if ranks is not None:
                metrics |= ranking_metrics(ranks, prefix=prefix + protocol, **kwargs)
        return metrics


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
    """
    batch_size = users_per_batch(batch_size, num_items)
    uniform_generator = torch.Generator().manual_seed(seed)
    popularity_generator = torch.Generator().manual_seed(seed + 1)
    weights = None if popularity is None else popularity.double() + 1.0  # every item drawable
    # Score users in order of history length so each batch is only as wide as its longest
    # history (most are short), then put the results back in the frame's order.
    if seen is not None:
        held_out = held_out.with_columns(seen.alias(_SEEN))
    order = held_out[schema.HISTORY].list.len().arg_sort().to_numpy(writable=True)
    by_length = held_out[order]
    ranks: dict[str, list[torch.Tensor]] = {"full": [], "sampled": [], "popsampled": []}
    top_items = []
    # Negatives are drawn per block of SAMPLING_BLOCK users, so the scoring batch size
    # does not change them; scores are computed per batch_size users within a block.
    for block in by_length.iter_slices(SAMPLING_BLOCK):
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
            candidates["sampled"] = draw(uniform_generator)
            if weights is not None:
                candidates["popsampled"] = draw(popularity_generator, weights)
        for start in range(0, block.height, batch_size):
            rows = slice(start, start + batch_size)
            scores = scorer(history[rows, -max_len:].to(device)).float()  # (b, N + 1)
            for protocol, protocol_candidates in candidates.items():
                ranks[protocol].append(_ranks_among(scores, protocol_candidates[rows]))
            excluded = history[rows].to(device) if exclude_history else None
            exclude_items(scores, excluded)
            top_items.append(top_k(scores, min(TOP_K, num_items))[1].cpu())
            ranks["full"].append(rank_of_targets(scores, targets[rows].to(device)).cpu())
    restore = torch.from_numpy(order).long()

    def restored(values: list[torch.Tensor]) -> torch.Tensor | None:
        return _unsort(torch.cat(values), restore) if values else None

    return HeldOutRanks(
        full=restored(ranks["full"]),
        sampled=restored(ranks["sampled"]),
        popsampled=restored(ranks["popsampled"]),
        top_items=restored(top_items),
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


def _unsort(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Undo a permutation: values[i] belongs to row order[i]."""
    restored = torch.empty_like(values)
    restored[order] = values
    return restored


def item_popularity(train: pl.DataFrame, num_items: int) -> torch.Tensor:
    """(num_items + 1,) float counts of each item in the training sequences; 0 at padding."""
    items = train[schema.ITEM_SEQUENCE].explode().drop_nulls().to_numpy(writable=True)
    items = torch.from_numpy(items)
    return torch.bincount(items.long(), minlength=num_items + 1).double()


def beyond_accuracy(
    top_items: torch.Tensor, popularity: torch.Tensor, num_items: int
) -> dict[str, float]:
    """Catalogue coverage of the top-K lists and the mean training count of their items."""
    return {
        f"coverage@{TOP_K}": top_items.unique().numel() / num_items,
        f"mean_popularity@{TOP_K}": popularity[top_items].mean().item(),
    }


HISTORY_BUCKETS = (1, 3, 5, 10, 20, 50)  # lower bounds of history-length buckets
POPULARITY_BUCKETS = (0, 10, 100, 1000, 10_000)  # lower bounds of training-count buckets


def bucket_labels(values: torch.Tensor, bounds: tuple[int, ...]) -> list[str]:
    """Label each value with its bucket: "1-2", "3-4", ..., "50+"."""
    names = [
        f"{low}-{high - 1}" if high - 1 > low else str(low)
        for low, high in itertools.pairwise(bounds)
    ] + [f"{bounds[-1]}+"]
    index = torch.bucketize(values, torch.tensor(bounds[1:], dtype=values.dtype), right=True)
    return [names[i] for i in index.tolist()]


def breakdowns(
    held_out: pl.DataFrame, popularity: torch.Tensor, ranks: dict[str, torch.Tensor]
) -> pl.DataFrame:
    """NDCG@10 and HR@10 of each scorer by history-length and target-popularity bucket.

    Args:
        held_out: The evaluated split.
        popularity: Training counts per item.
        ranks: Full-catalogue ranks per scorer name, in `held_out`'s row order.

    Returns:
        Rows of (breakdown, bucket, users, scorer, ndcg@10, hit@10), buckets in order.
    """
    lengths = torch.from_numpy(held_out[schema.HISTORY].list.len().to_numpy().astype("int64"))
    targets = torch.from_numpy(held_out[schema.TARGET].to_numpy().astype("int64"))
    per_user = pl.DataFrame({
        "history_length": bucket_labels(lengths, HISTORY_BUCKETS),
        "target_popularity": bucket_labels(popularity[targets].long(), POPULARITY_BUCKETS),
        **{f"{name}_rank": rank.numpy() for name, rank in ranks.items()},
    })  # fmt: skip
    frames = []
    for breakdown in ("history_length", "target_popularity"):
        for name in ranks:
            rank = pl.col(f"{name}_rank")
            frames.append(
                per_user.group_by(pl.col(breakdown).alias("bucket"))
                .agg(
                    pl.len().alias("users"),
                    pl.when(rank < 10)
                    .then(1.0 / (rank + 2).log(2))
                    .otherwise(0.0)
                    .mean()
                    .alias("ndcg@10"),
                    (rank < 10).mean().alias("hit@10"),
                )
                .with_columns(breakdown=pl.lit(breakdown), scorer=pl.lit(name))
                .with_columns(order=pl.col("bucket").str.extract(r"^(\d+)").cast(pl.Int64))
            )
    columns = ["breakdown", "bucket", "users", "scorer", "ndcg@10", "hit@10"]
    return pl.concat(frames).sort("breakdown", "order", "scorer").select(columns)


def example_users(
    test: pl.DataFrame, top_items: torch.Tensor, item_ids: list[str], count: int = 5
) -> list[Example]:
    """A seeded sample of test users with recent history and top items in original ids."""
    rows = torch.randperm(test.height, generator=torch.Generator().manual_seed(SAMPLING_SEED))
    examples = []
    for row in rows[:count].tolist():
        user, history, target = test.row(row)
        examples.append(
            Example(
                user_id=user,
                history=[item_ids[i] for i in history[-8:]],
                target=item_ids[target],
                recommendations=[item_ids[i] for i in top_items[row].tolist()],
            )
        )
    return examples


def evaluate_model(
    model_dir: str | Path,
    sequences_dir: str | Path,
    out_dir: str | Path,
    device: str = "auto",
    exclude_history: bool = True,
    promotion: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Evaluate a model artifact and both baselines; write metrics, breakdowns and report.

    Writes into `out_dir`: `metrics.json` (flat keys: test metrics unprefixed, validation
    `val_*`, baselines `baseline_<name>_*`), `breakdowns.csv` and `report.html`, and
    `promotion.json` when `promotion` (the promote step's decision, shown in the report)
    is given. A sweep's trials, kept in the model directory, are shown in the report.

    Returns:
        The metrics of metrics.json.

    Raises:
        SASRecError: for a wrong input or output folder (nothing is written), or a model
            of another catalogue than the sequences.
    """
    from sasrec.baselines import PopularityScorer, TransitionScorer
    from sasrec.checkpoint import load_model_dir, read_training_info
    from sasrec.device import resolve_device
    from sasrec.io import atomic_dir, require_output_dir, write_json

    require_output_dir(out_dir, schema.EVALUATE_STEP)
    sequences = read_sequences(sequences_dir)
    torch_device = resolve_device(device)
    model = load_model_dir(model_dir, torch_device)
    require_same_catalogue(model_dir, sequences)
    train, valid, test = sequences.train, sequences.valid, sequences.test
    num_items, max_len = model.config.num_items, model.config.max_len
    popularity = item_popularity(train, num_items)
    scorers: dict[str, Scorer] = {
        "sasrec": model,
        "transition": TransitionScorer(train, popularity),
        "popularity": PopularityScorer(popularity),
    }
    known = known_sequences(train, valid, test)
    test_user_items, valid_user_items = user_items(test, known), user_items(valid, known)
    args = {"num_items": num_items, "max_len": max_len, "exclude_history": exclude_history}
    test_ranks = {
        name: rank_held_out(
            scorer,
            test,
            popularity=popularity if name == "sasrec" else None,
            num_sampled=NUM_SAMPLED_NEGATIVES if name == "sasrec" else 0,
            device=torch_device,
            seen=test_user_items,
            **args,
        )
        for name, scorer in scorers.items()
    }
    valid_ranks = rank_held_out(
        model, valid, popularity=popularity, device=torch_device, seen=valid_user_items,
        **args,
    )  # fmt: skip
    scorer_metrics = {
        name: ranks.metrics() | beyond_accuracy(ranks.top_items, popularity, num_items)
        for name, ranks in test_ranks.items()
    }
    metrics = test_ranks["sasrec"].metrics() | valid_ranks.metrics(prefix="val_")
    metrics |= beyond_accuracy(test_ranks["sasrec"].top_items, popularity, num_items)
    for name in ("transition", "popularity"):
        metrics |= {f"baseline_{name}_{k}": v for k, v in scorer_metrics[name].items()}
    metrics |= {"num_test_users": float(test.height), "num_valid_users": float(valid.height)}
    require_finite(metrics)
    by_bucket = breakdowns(test, popularity, {n: r.full for n, r in test_ranks.items()})
    item_ids = item_labels(
        ["<pad>", *sequences.item_vocab[schema.ITEM_ID]],
        sequences.directory / schema.ITEM_TITLES_FILE,
    )
    training = read_training_info(model_dir)
    context = {
        "users evaluated (test)": test.height,
        "items": num_items,
        "history items excluded from rankings": exclude_history,
        "loss": training["hparams"]["loss"],
        "epochs run (best)": f"{training['epochs_run']} ({training['best_epoch']})",
        **{f"data {k}": v for k, v in sequences.stats.items()},
    }
    page = render_report(
        metrics, scorer_metrics, by_bucket,
        example_users(test, test_ranks["sasrec"].top_items, item_ids), context,
        read_trials(model_dir), promotion,
    )  # fmt: skip
    with atomic_dir(out_dir, schema.EVALUATE_STEP) as tmp:
        write_json(metrics, tmp / schema.METRICS_FILE)
        if promotion is not None:
            write_json(promotion, tmp / PROMOTION_FILE)
        by_bucket.write_csv(tmp / schema.BREAKDOWNS_FILE)
        (tmp / schema.REPORT_FILE).write_text(page, encoding="utf-8")
    log.info(
        "test ndcg@10 %.4f (transition %.4f, popularity %.4f)",
        metrics["ndcg@10"],
        metrics["baseline_transition_ndcg@10"],
        metrics["baseline_popularity_ndcg@10"],
    )
    return metrics


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
