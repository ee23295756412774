"""Evaluation of a trained model on the test users, against the baselines.

Metrics, breakdowns by history length and item popularity, beyond-accuracy figures, and
the report. The ranking itself is `sasrec.scoring`'s, shared with validation and promotion.
"""

import itertools
import logging
from pathlib import Path
from typing import Any

import polars as pl
import torch

from sasrec.data import schema
from sasrec.data.sequences import known_sequences
from sasrec.data.titles import item_labels
from sasrec.errors import SASRecError
from sasrec.evaluation.report import Example, render_report
from sasrec.inputs import SequenceFiles, read_sequences, require_same_catalogue
from sasrec.io import atomic_dir, require_complete, require_output_dir
from sasrec.metrics import METRICS_AT_K, confidence_half_width
from sasrec.model import SASRec
from sasrec.registry.sweep import read_trials
from sasrec.scoring import (
    NUM_SAMPLED_NEGATIVES,
    SAMPLING_SEED,
    TOP_K,
    HeldOutRanks,
    Scorer,
    item_popularity,
    rank_held_out,
    require_finite,
    user_items,
)

log = logging.getLogger(__name__)


def beyond_accuracy(
    top_items: torch.Tensor, popularity: torch.Tensor, num_items: int
) -> dict[str, float]:
    """Catalogue coverage of the top-K lists and the mean training count of their items."""
    return {
        f"coverage@{TOP_K}": top_items.unique().numel() / num_items,
        f"mean_popularity@{TOP_K}": popularity[top_items].mean().item(),
    }


def headline_intervals(full_ranks: torch.Tensor) -> dict[str, float]:
    """Half-widths of the 95% intervals of the headline metrics: `ndcg@10_ci95`, `hit@10_ci95`."""
    return {
        f"{name}@{TOP_K}_ci95": confidence_half_width(METRICS_AT_K[name](full_ranks, TOP_K))
        for name in ("ndcg", "hit")
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
    score_dirs: list[str | Path] | None = None,
) -> dict[str, float]:
    """Evaluate a model artifact and both baselines; write metrics, breakdowns and report.

    Writes into `out_dir`: `metrics.json` (flat keys: test metrics unprefixed, validation
    `val_*`, baselines `baseline_<name>_*`), `breakdowns.csv` and `report.html`, and
    `promotion.json` when `promotion` (the promote step's decision, shown in the report)
    is given. A sweep's trials, kept in the model directory, are shown in the report.
    With `score_dirs` (every shard's `score_shard` output) the ranks are read from them
    instead of computed: the same metrics, breakdowns and report.

    Returns:
        The metrics of metrics.json.

    Raises:
        SASRecError: for a wrong input or output folder (nothing is written), a model of
            another catalogue than the sequences, or shards that are not all the users.
    """
    require_output_dir(out_dir, schema.EVALUATE_STEP)
    model, sequences, torch_device = _model_and_sequences(model_dir, sequences_dir, device)
    train, test = sequences.train, sequences.test
    num_items, max_len = model.config.num_items, model.config.max_len
    popularity = item_popularity(train, num_items)
    if score_dirs is None:
        scorers = _scorers(model, train, popularity)
        test_ranks, valid_ranks = _rank_test_and_valid(
            scorers, sequences, popularity, max_len, torch_device, exclude_history
        )
    else:
        test_ranks, valid_ranks = _merged_ranks(score_dirs, sequences)
    scorer_metrics = {
        name: ranks.metrics()
        | headline_intervals(ranks.full)
        | beyond_accuracy(ranks.top_items, popularity, num_items)
        for name, ranks in test_ranks.items()
    }
    metrics = test_ranks["sasrec"].metrics() | valid_ranks.metrics(prefix="val_")
    metrics |= headline_intervals(test_ranks["sasrec"].full)
    metrics |= beyond_accuracy(test_ranks["sasrec"].top_items, popularity, num_items)
    for name in ("transition", "popularity"):
        metrics |= {f"baseline_{name}_{k}": v for k, v in scorer_metrics[name].items()}
    metrics |= {
        "num_test_users": float(test.height),
        "num_valid_users": float(sequences.valid.height),
    }
    require_finite(metrics)
    by_bucket = breakdowns(test, popularity, {n: r.full for n, r in test_ranks.items()})
    item_ids = item_labels(
        ["<pad>", *sequences.item_vocab[schema.ITEM_ID]],
        sequences.directory / schema.ITEM_TITLES_FILE,
    )
    context = _report_context(model_dir, sequences, num_items, exclude_history)
    sequences_report = sequences.directory / schema.REPORT_FILE
    page = render_report(
        metrics, scorer_metrics, by_bucket,
        example_users(test, test_ranks["sasrec"].top_items, item_ids), context,
        read_trials(model_dir), promotion, sequences_report if sequences_report.is_file() else None,
    )  # fmt: skip
    _write_evaluation(out_dir, metrics, by_bucket, page, promotion)
    log.info(
        "test ndcg@10 %.4f (transition %.4f, popularity %.4f)",
        metrics["ndcg@10"],
        metrics["baseline_transition_ndcg@10"],
        metrics["baseline_popularity_ndcg@10"],
    )
    return metrics


def score_shard(
    model_dir: str | Path,
    sequences_dir: str | Path,
    out_dir: str | Path,
    shard: int,
    shards: int,
    device: str = "auto",
    exclude_history: bool = True,
) -> dict[str, int]:
    """Score one shard of the users, for `evaluate_model(score_dirs=...)` to merge.

    Writes into `out_dir` the ranks of the shard's test users by every scorer and of its
    validation users by the model (`schema.RANKS_FILE`). Shards are whole blocks of users
    in the order one process scores them, so that their results are exactly those of one
    process (`sasrec.scoring.shard_range`).

    Returns:
        Counts of the shard's test and validation users.
    """
    require_output_dir(out_dir, schema.SCORE_STEP)
    model, sequences, torch_device = _model_and_sequences(model_dir, sequences_dir, device)
    popularity = item_popularity(sequences.train, model.config.num_items)
    test_ranks, valid_ranks = _rank_test_and_valid(
        _scorers(model, sequences.train, popularity), sequences, popularity,
        model.config.max_len, torch_device, exclude_history, shard=(shard, shards),
    )  # fmt: skip
    with atomic_dir(out_dir, schema.SCORE_STEP) as tmp:
        for name, ranks in test_ranks.items():
            ranks.to_frame().write_parquet(
                tmp / schema.RANKS_FILE.format(split="test", scorer=name)
            )
        valid_ranks.to_frame().write_parquet(
            tmp / schema.RANKS_FILE.format(split="valid", scorer="sasrec")
        )
    counts = {"test_users": len(test_ranks["sasrec"].rows), "valid_users": len(valid_ranks.rows)}
    log.info("shard %d of %d: %s", shard, shards, counts)
    return counts


def _model_and_sequences(
    model_dir: str | Path, sequences_dir: str | Path, device: str
) -> tuple[SASRec, SequenceFiles, torch.device]:
    """The model on its device and the sequences it must have been trained on."""
    from sasrec.device import resolve_device
    from sasrec.model_dir import load_model_dir

    sequences = read_sequences(sequences_dir)
    torch_device = resolve_device(device)
    model = load_model_dir(model_dir, torch_device)
    require_same_catalogue(model_dir, sequences)
    return model, sequences, torch_device


def _scorers(model: SASRec, train: pl.DataFrame, popularity: torch.Tensor) -> dict[str, Scorer]:
    """The model and the baselines it is compared with, by name."""
    from sasrec.evaluation.baselines import PopularityScorer, TransitionScorer

    return {
        "sasrec": model,
        "transition": TransitionScorer(train, popularity),
        "popularity": PopularityScorer(popularity),
    }


SCORER_NAMES = ("sasrec", "transition", "popularity")


def _merged_ranks(
    score_dirs: list[str | Path], sequences: SequenceFiles
) -> tuple[dict[str, HeldOutRanks], HeldOutRanks]:
    """The ranks of every shard in `score_dirs`, merged; each split's users exactly once.

    Raises:
        SASRecError: when a folder is not a shard's output, or the shards are not all
            the users (one missing, or given twice).
    """
    folders = [require_complete(d, schema.SCORE_STEP) for d in score_dirs]

    def merged(split: str, scorer: str, users: int) -> HeldOutRanks:
        name = schema.RANKS_FILE.format(split=split, scorer=scorer)
        ranks = HeldOutRanks.from_frames([pl.read_parquet(folder / name) for folder in folders])
        if not torch.equal(ranks.rows, torch.arange(users)):
            raise SASRecError(
                f"the {len(folders)} scoring shards hold {len(ranks.rows):,} {split} users "
                f"({len(ranks.rows.unique()):,} distinct) of {users:,}: give every shard's "
                f"output once, all scored on these sequences"
            )
        return ranks

    test = {name: merged("test", name, sequences.test.height) for name in SCORER_NAMES}
    return test, merged("valid", "sasrec", sequences.valid.height)


def _rank_test_and_valid(
    scorers: dict[str, Scorer],
    sequences: SequenceFiles,
    popularity: torch.Tensor,
    max_len: int,
    device: torch.device,
    exclude_history: bool,
    shard: tuple[int, int] = (0, 1),
) -> tuple[dict[str, HeldOutRanks], HeldOutRanks]:
    """Every scorer's ranks of the test users, and the model's of the validation users.

    Only the model is also ranked under the sampled protocols. `shard`: (shard, shards),
    to rank only that shard's users.
    """
    train, valid, test = sequences.train, sequences.valid, sequences.test
    known = known_sequences(train, valid, test)
    args = {
        "num_items": len(popularity) - 1, "max_len": max_len, "exclude_history": exclude_history,
        "device": device, "shard": shard,
    }  # fmt: skip
    test_ranks = {
        name: rank_held_out(
            scorer,
            test,
            popularity=popularity if name == "sasrec" else None,
            num_sampled=NUM_SAMPLED_NEGATIVES if name == "sasrec" else 0,
            seen=user_items(test, known),
            **args,
        )
        for name, scorer in scorers.items()
    }
    valid_ranks = rank_held_out(
        scorers["sasrec"], valid, popularity=popularity, seen=user_items(valid, known), **args
    )
    return test_ranks, valid_ranks


def _report_context(
    model_dir: str | Path, sequences: SequenceFiles, num_items: int, exclude_history: bool
) -> dict[str, Any]:
    """The data and training facts the report shows last."""
    from sasrec.model_dir import read_training_info

    training = read_training_info(model_dir)
    return {
        "users evaluated (test)": sequences.test.height,
        "items": num_items,
        "history items excluded from rankings": exclude_history,
        "loss": training["hparams"]["loss"],
        "epochs run (best)": f"{training['epochs_run']} ({training['best_epoch']})",
        # Models trained before the transitions were mixed in have no weight: theirs is 0.
        "transition weight": training.get("transition_weight", 0.0),
        **{f"data {k}": v for k, v in sequences.stats.items()},
    }


def _write_evaluation(
    out_dir: str | Path,
    metrics: dict[str, float],
    by_bucket: pl.DataFrame,
    page: str,
    promotion: dict[str, Any] | None,
) -> None:
    """The evaluate step's output folder, written whole (see `evaluate_model`)."""
    from sasrec.io import write_json

    with atomic_dir(out_dir, schema.EVALUATE_STEP) as tmp:
        write_json(metrics, tmp / schema.METRICS_FILE)
        if promotion is not None:
            write_json(promotion, tmp / schema.PROMOTION_FILE)
        by_bucket.write_csv(tmp / schema.BREAKDOWNS_FILE)
        (tmp / schema.REPORT_FILE).write_text(page, encoding="utf-8")
