"""Column names and Parquet schemas, defined once for every writer and reader."""

import polars as pl

from sasrec.filenames import (  # noqa: F401 - readers and writers name files through schema
    BREAKDOWNS_FILE,
    INTERACTIONS_FILE,
    ITEM_TITLES_FILE,
    ITEM_VOCAB_FILE,
    METRICS_FILE,
    PROMOTION_FILE,
    RANKS_FILE,
    RECOMMENDATIONS_FILE,
    REPORT_FILE,
    STATS_FILE,
    TEST_FILE,
    TRAIN_FILE,
    VALID_FILE,
)

USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
RATING = "rating"
TITLE = "title"  # item_titles.parquet: item_id, title (from the item metadata, optional)
SPLIT = "split"  # train / valid / test where a source comes split (official splits), else null
TRAIN_SPLIT, VALID_SPLIT, TEST_SPLIT = "train", "valid", "test"

# interactions.parquet: one row per review, in source order. For sources without times
# (SASRec text files) `timestamp` is the line number, which keeps their documented order.
INTERACTIONS_SCHEMA = pl.Schema(
    {
        USER_ID: pl.String,
        ITEM_ID: pl.String,
        TIMESTAMP: pl.Int64,
        RATING: pl.Float64,
        SPLIT: pl.String,
    }
)

# Sequence files hold item indices: 1..num_items, 0 is padding.
ITEM_INDEX = "item_index"
ITEM_SEQUENCE = "item_sequence"  # train.parquet: each user's training prefix, oldest first
HISTORY = "history"  # valid/test.parquet: what the model sees, oldest first
TARGET = "target"  # valid/test.parquet: the held-out item

ITEM_VOCAB_SCHEMA = pl.Schema({ITEM_INDEX: pl.Int32, ITEM_ID: pl.String})
TRAIN_SCHEMA = pl.Schema({USER_ID: pl.String, ITEM_SEQUENCE: pl.List(pl.Int32)})
HELD_OUT_SCHEMA = pl.Schema({USER_ID: pl.String, HISTORY: pl.List(pl.Int32), TARGET: pl.Int32})


# The steps whose output folders say so in their `_SASREC_STEP` file (see sasrec.io).
SEQUENCES_STEP = "sequences"
TRAIN_STEP = "train"
EVALUATE_STEP = "evaluate"
RECOMMEND_STEP = "recommend"
SCORE_STEP = "score"  # one shard of the users, scored for evaluate and recommend
PROMOTE_STEP = "promote"
