"""The sequences step: per-user chronological item sequences, k-core, item ids, splits."""

import logging
from pathlib import Path
from typing import Any

import polars as pl

from sasrec.data import schema
from sasrec.errors import SASRecError
from sasrec.io import atomic_path, write_json

log = logging.getLogger(__name__)

_ORDER = "_order"  # position in the source file: breaks timestamp ties deterministically


def earliest_interactions(interactions: pl.LazyFrame) -> pl.LazyFrame:
    """Keep each (user, item) pair's earliest interaction; ties go to the earlier row."""
    return (
        interactions.with_row_index(_ORDER)
        .sort(schema.TIMESTAMP, _ORDER)
        .unique([schema.USER_ID, schema.ITEM_ID], keep="first", maintain_order=True)
    )


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
    """One row per user (sorted by id): item indices in chronological order."""
    return (
        interactions.join(item_vocab, on=schema.ITEM_ID)
        .sort(schema.USER_ID, schema.TIMESTAMP, _ORDER)
        .group_by(schema.USER_ID, maintain_order=True)
        .agg(pl.col(schema.ITEM_INDEX).alias(schema.ITEM_SEQUENCE))
    )


def leave_one_out(sequences: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
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


def build_sequences(
    interactions_path: str | Path, out_dir: str | Path, kcore: int = 5
) -> dict[str, Any]:
    """Build the sequence files from an interactions Parquet file.

    Writes `train.parquet`, `valid.parquet`, `test.parquet`, `item_vocab.parquet` and
    `stats.json` into `out_dir`, atomically as one directory.

    Args:
        interactions_path: Parquet with `schema.INTERACTIONS_SCHEMA`.
        out_dir: The directory to create (replaced if it exists).
        kcore: Minimum interactions per user and per item; 0 or 1 disables the filter.

    Returns:
        The stats written to `stats.json`.

    Raises:
        SASRecError: when nothing is left after filtering.
    """
    raw = pl.scan_parquet(interactions_path)
    num_raw = raw.select(pl.len()).collect().item()
    interactions = kcore_filter(earliest_interactions(raw).collect(), kcore)
    if interactions.is_empty():
        raise SASRecError(
            f"no interactions left in {interactions_path} after the {kcore}-core filter "
            f"({num_raw} before); use a lower --kcore (0 disables it)"
        )
    item_vocab = build_item_vocab(interactions)
    train, valid, test = leave_one_out(user_sequences(interactions, item_vocab))
    if test.is_empty():
        raise SASRecError(
            f"no user in {interactions_path} has the 3 interactions needed to hold out a "
            f"validation and a test item after the {kcore}-core filter; use a lower --kcore "
            "or more data"
        )
    stats = sequence_stats(interactions, item_vocab, train, test, kcore, num_raw)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        train.write_parquet(tmp / schema.TRAIN_FILE)
        valid.write_parquet(tmp / schema.VALID_FILE)
        test.write_parquet(tmp / schema.TEST_FILE)
        item_vocab.write_parquet(tmp / schema.ITEM_VOCAB_FILE)
        write_json(stats, tmp / schema.STATS_FILE)
    log.info("sequences: %s", stats)
    return stats


def sequence_stats(
    interactions: pl.DataFrame,
    item_vocab: pl.DataFrame,
    train: pl.DataFrame,
    test: pl.DataFrame,
    kcore: int,
    num_raw: int,
) -> dict[str, Any]:
    """Counts after filtering, for stats.json and the logs."""
    num_users = train.height
    return {
        "kcore": kcore,
        "num_raw_interactions": num_raw,
        "num_interactions": interactions.height,
        "num_users": num_users,
        "num_items": item_vocab.height,
        "num_eval_users": test.height,
        "mean_sequence_length": interactions.height / num_users,
        "density": interactions.height / (num_users * item_vocab.height),
    }
