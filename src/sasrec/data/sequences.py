"""The sequences step: per-user chronological item sequences, k-core, item ids, splits."""

import logging
from pathlib import Path
from typing import Any

import polars as pl

from sasrec.data import schema
from sasrec.data.report import render_sequence_report
from sasrec.errors import SASRecError
from sasrec.inputs import collect_interactions, scan_interactions
from sasrec.io import atomic_dir, require_output_dir, write_json

log = logging.getLogger(__name__)

_ORDER = "_order"  # position in the source file: breaks timestamp ties deterministically
_TIMES = "_times"  # each user's interaction times, aligned with the item sequence
_REPEATED = "_repeated"  # the row's (user, item) pair occurs more than once

SPLITS = ("leave_one_out", "timestamp")
# The cut points of the Amazon Reviews 2023 benchmark's timestamp split (milliseconds):
# training before T1, validation in [T1, T2), test from T2.
OFFICIAL_T1_MS = 1_628_643_414_042
OFFICIAL_T2_MS = 1_658_002_729_837


def earliest_interactions(interactions: pl.LazyFrame) -> pl.LazyFrame:
    """Keep each (user, item) pair's earliest interaction; ties go to the earlier row.

    Rows come in no particular order, each with its place in the source (`_ORDER`). Only
    the pairs that repeat are sorted by time: most pairs occur once.
    """
    pair = pl.struct(schema.USER_ID, schema.ITEM_ID)
    indexed = interactions.with_row_index(_ORDER).with_columns(
        pair.is_duplicated().alias(_REPEATED)
    )
    repeated = (
        indexed.filter(pl.col(_REPEATED))
        .sort(schema.TIMESTAMP, _ORDER)
        .unique([schema.USER_ID, schema.ITEM_ID], keep="first", maintain_order=True)
    )
    return pl.concat([indexed.filter(~pl.col(_REPEATED)), repeated]).drop(_REPEATED)


def kcore_filter(interactions: pl.DataFrame, k: int) -> pl.DataFrame:
    """Iteratively drop users and items with fewer than `k` interactions (the k-core).

    Dropping an item can push a user below `k` and vice versa, so this repeats until
    nothing changes. `k <= 1` keeps everything.
    """
    if k <= 1:
        return interactions
    while True:
        kept = interactions.filter(
            (pl.len().over(schema.USER_ID) >= k) & (pl.len().over(schema.ITEM_ID) >= k)
        )
        if kept.height == interactions.height:
            return kept
        interactions = kept


def build_item_vocab(interactions: pl.DataFrame) -> pl.DataFrame:
    """Map item ids to indices 1..N in sorted id order (0 is padding)."""
    return (
        interactions.select(pl.col(schema.ITEM_ID).unique().sort())
        .with_row_index(schema.ITEM_INDEX, offset=1)
        .select(pl.col(schema.ITEM_INDEX).cast(pl.Int32), schema.ITEM_ID)
    )


def user_sequences(interactions: pl.DataFrame, item_vocab: pl.DataFrame) -> pl.DataFrame:
    """One row per user (sorted by id): item indices and their times, in chronological order.

    Equal timestamps keep the order of the source file.
    """
    return (
        interactions.join(item_vocab, on=schema.ITEM_ID)
        .sort(schema.USER_ID, schema.TIMESTAMP, _ORDER)
        .group_by(schema.USER_ID, maintain_order=True)
        .agg(
            pl.col(schema.ITEM_INDEX).alias(schema.ITEM_SEQUENCE),
            pl.col(schema.TIMESTAMP).alias(_TIMES),
            pl.col(schema.SPLIT),
        )
    )


def timestamp_split(
    sequences: pl.DataFrame,
    t1: int = OFFICIAL_T1_MS,
    t2: int = OFFICIAL_T2_MS,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Split by time, as the Amazon Reviews 2023 benchmark does: see `labelled_split`.

    Interactions before `t1` train, those in [t1, t2) validate, those from `t2` on test.
    """
    time = pl.element()
    labels = pl.col(_TIMES).list.eval(
        pl.when(time < t1)
        .then(pl.lit(schema.TRAIN_SPLIT))
        .when(time < t2)
        .then(pl.lit(schema.VALID_SPLIT))
        .otherwise(pl.lit(schema.TEST_SPLIT))
    )
    return labelled_split(sequences.with_columns(labels.alias(schema.SPLIT)))


def labelled_split(
    sequences: pl.DataFrame,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Split by each interaction's label (`train`, `valid`, `test` in the `split` list).

    Training items form each user's training sequence. Each validation or test interaction
    is an example whose history is everything the user did before it (training, validation
    and earlier test items alike), so a user can have several. An example with an empty
    history (the user's first interaction) is dropped: there is nothing to recommend from.

    Returns:
        (train, valid, test) frames with `schema.TRAIN_SCHEMA` / `schema.HELD_OUT_SCHEMA`.
    """
    seq, label, position = pl.col(schema.ITEM_SEQUENCE), pl.col(schema.SPLIT), "_position"
    rows = (
        sequences.with_columns(pl.int_ranges(seq.list.len()).alias(position))
        .select(schema.USER_ID, position, seq.alias(schema.TARGET), label)
        .explode(position, schema.TARGET, schema.SPLIT)
    )
    train = (
        rows.filter(label == schema.TRAIN_SPLIT)
        .group_by(schema.USER_ID, maintain_order=True)
        .agg(pl.col(schema.TARGET).alias(schema.ITEM_SEQUENCE))
    )
    held_out = (
        rows.filter(label != schema.TRAIN_SPLIT, pl.col(position) > 0)
        .join(sequences.select(schema.USER_ID, seq), on=schema.USER_ID, maintain_order="left")
        .with_columns(seq.list.head(pl.col(position)).alias(schema.HISTORY))
    )
    columns = [schema.USER_ID, schema.HISTORY, schema.TARGET]
    valid = held_out.filter(label == schema.VALID_SPLIT).select(columns)
    test = held_out.filter(label == schema.TEST_SPLIT).select(columns)
    return (
        train.cast(dict(schema.TRAIN_SCHEMA)),
        valid.cast(dict(schema.HELD_OUT_SCHEMA)),
        test.cast(dict(schema.HELD_OUT_SCHEMA)),
    )


def leave_one_out(
    sequences: pl.DataFrame,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Split each sequence: last item test, second-to-last validation, the rest training.

    Users with fewer than 3 items only train (their whole sequence).

    Returns:
        (train, valid, test) frames with `schema.TRAIN_SCHEMA` / `schema.HELD_OUT_SCHEMA`.
    """
    seq = pl.col(schema.ITEM_SEQUENCE)
    length = seq.list.len()
    held_out = sequences.filter(length >= 3)
    train = sequences.select(
        schema.USER_ID,
        pl.when(length >= 3)
        .then(seq.list.slice(0, length - 2))
        .otherwise(seq)
        .alias(schema.ITEM_SEQUENCE),
    )
    valid = held_out.select(
        schema.USER_ID,
        seq.list.slice(0, length - 2).alias(schema.HISTORY),
        seq.list.get(-2).alias(schema.TARGET),
    )
    test = held_out.select(
        schema.USER_ID,
        seq.list.slice(0, length - 1).alias(schema.HISTORY),
        seq.list.get(-1).alias(schema.TARGET),
    )
    return (
        train.cast(dict(schema.TRAIN_SCHEMA)),
        valid.cast(dict(schema.HELD_OUT_SCHEMA)),
        test.cast(dict(schema.HELD_OUT_SCHEMA)),
    )


def known_sequences(train: pl.DataFrame, valid: pl.DataFrame, test: pl.DataFrame) -> pl.DataFrame:
    """Every user's whole known sequence, oldest first: (user_id, history), one row per user.

    A held-out example's history is everything the user did before it, so a user's longest
    example (history, then target) is the sequence up to the last held-out item; training
    items not in it (later ones, where published labels interleave) follow it. Users with
    no held-out example have their training sequence.
    """
    seq, history, item = pl.col(schema.ITEM_SEQUENCE), pl.col(schema.HISTORY), "_item"
    longest = (
        pl.concat([valid, test])
        .select(schema.USER_ID, pl.concat_list(history, schema.TARGET).alias(schema.HISTORY))
        .group_by(schema.USER_ID)
        .agg(history.sort_by(history.list.len()).last())
    )
    known = longest.explode(schema.HISTORY).select(schema.USER_ID, history.alias(item))
    later_training_items = (
        train.select(schema.USER_ID, seq.alias(item))
        .explode(item)
        .drop_nulls(item)
        .with_row_index("_order")
        .join(known, on=[schema.USER_ID, item], how="anti")
        .sort("_order")
        .group_by(schema.USER_ID, maintain_order=True)
        .agg(pl.col(item))
    )
    return (
        longest.join(later_training_items, on=schema.USER_ID, how="full", coalesce=True)
        .select(
            schema.USER_ID,
            pl.concat_list(history.fill_null([]), pl.col(item).fill_null([])).alias(schema.HISTORY),
        )
        .cast({schema.HISTORY: pl.List(pl.Int32)})
        .sort(schema.USER_ID)
    )


def build_sequences(
    interactions_path: str | Path,
    out_dir: str | Path,
    kcore: int = 5,
    split: str = "leave_one_out",
) -> dict[str, Any]:
    """Build the sequence files from an interactions Parquet file.

    Writes `train.parquet`, `valid.parquet`, `test.parquet`, `item_vocab.parquet`,
    `stats.json` and `report.html` (sequence lengths, item popularity) into `out_dir`,
    atomically as one directory.

    Args:
        interactions_path: Parquet with `schema.INTERACTIONS_SCHEMA`.
        out_dir: The directory to create (replaced if it exists).
        kcore: Minimum interactions per user and per item; 0 or 1 disables the filter.
        split: `leave_one_out` (each user's last item tests, the one before validates) or
            `timestamp` (the Amazon Reviews 2023 benchmark's cut points). Interactions that
            come labelled (an official split) keep their labels instead, with no filter.

    Returns:
        The stats written to `stats.json`.

    Raises:
        SASRecError: for an unknown split, or when nothing is left to evaluate.
    """
    if split not in SPLITS:
        raise SASRecError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    if kcore < 0:
        raise SASRecError(f"kcore must be 0 (no filter) or more, got {kcore}")
    require_output_dir(out_dir, schema.SEQUENCES_STEP)
    raw = scan_interactions(interactions_path)
    counts = raw.select(pl.len(), pl.col(schema.SPLIT).count())
    num_raw, num_labelled = collect_interactions(counts, interactions_path).row(0)
    if num_labelled:
        # An official split: kept as published, already deduplicated and filtered.
        log.info("%s comes split: kept as published (--split, --kcore ignored)", interactions_path)
        split, kcore = "published", 0
        interactions = collect_interactions(raw.with_row_index(_ORDER), interactions_path)
    else:
        earliest = collect_interactions(earliest_interactions(raw), interactions_path)
        interactions = kcore_filter(earliest, kcore)
    if interactions.is_empty():
        raise SASRecError(
            f"no interactions left in {interactions_path} after the {kcore}-core filter "
            f"({num_raw} before); use a lower --kcore (0 disables it)"
        )
    item_vocab = build_item_vocab(interactions)
    sequences = user_sequences(interactions, item_vocab)
    train, valid, test = _split_sequences(sequences, split, kcore, interactions_path)
    stats = {
        "kcore": kcore,
        "split": split,
        "num_raw_interactions": num_raw,
        **sequence_stats(sequences, item_vocab),
        **split_stats(train, valid, test),
    }
    with atomic_dir(out_dir, schema.SEQUENCES_STEP) as tmp:
        train.write_parquet(tmp / schema.TRAIN_FILE)
        valid.write_parquet(tmp / schema.VALID_FILE)
        test.write_parquet(tmp / schema.TEST_FILE)
        item_vocab.write_parquet(tmp / schema.ITEM_VOCAB_FILE)
        write_json(stats, tmp / schema.STATS_FILE)
        (tmp / schema.REPORT_FILE).write_text(render_sequence_report(sequences, stats))
        titles_path = Path(interactions_path).parent / schema.ITEM_TITLES_FILE
        if titles_path.is_file():  # the download step fetched the item metadata
            pl.scan_parquet(titles_path).join(
                item_vocab.lazy().select(schema.ITEM_ID), on=schema.ITEM_ID, how="semi"
            ).sink_parquet(tmp / schema.ITEM_TITLES_FILE)
    log.info("sequences: %s", stats)
    return stats


def _split_sequences(
    sequences: pl.DataFrame, split: str, kcore: int, interactions_path: str | Path
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(train, valid, test) by `split` ("published": the labels the interactions came with).

    Raises:
        SASRecError: when no user has a validation and a test example.
    """
    if split == "published":
        train, valid, test = labelled_split(sequences)
    elif split == "timestamp":
        train, valid, test = timestamp_split(sequences)
    else:
        train, valid, test = leave_one_out(sequences)
    if test.is_empty() or valid.is_empty():
        needed = (
            "interactions on both sides of the cut points"
            if split == "timestamp"
            else "the 3 interactions needed to hold out a validation and a test item"
        )
        raise SASRecError(
            f"no user in {interactions_path} has {needed} after the {kcore}-core filter; "
            "use a lower --kcore, another --split, or more data"
        )
    return train, valid, test


QUANTILES = (0.5, 0.9, 0.99)


def sequence_stats(sequences: pl.DataFrame, item_vocab: pl.DataFrame) -> dict[str, Any]:
    """Counts after filtering and quantiles of sequence length and item popularity."""
    lengths = sequences[schema.ITEM_SEQUENCE].list.len()
    popularity = sequences[schema.ITEM_SEQUENCE].explode().value_counts()["count"]
    num_interactions, num_users, num_items = int(lengths.sum()), sequences.height, item_vocab.height
    return {
        "num_interactions": num_interactions,
        "num_users": num_users,
        "num_items": num_items,
        "mean_sequence_length": num_interactions / num_users,
        "density": num_interactions / (num_users * num_items),
        **{f"sequence_length_p{q * 100:g}": lengths.quantile(q, "nearest") for q in QUANTILES},
        "sequence_length_max": int(lengths.max()),
        **{f"item_count_p{q * 100:g}": popularity.quantile(q, "nearest") for q in QUANTILES},
        "item_count_max": int(popularity.max()),
    }


def split_stats(train: pl.DataFrame, valid: pl.DataFrame, test: pl.DataFrame) -> dict[str, int]:
    """Sizes of the three splits."""
    return {
        "num_train_users": train.height,
        "num_train_interactions": int(train[schema.ITEM_SEQUENCE].list.len().sum()),
        "num_valid_examples": valid.height,
        "num_test_examples": test.height,
        "num_eval_users": test[schema.USER_ID].n_unique(),
    }
