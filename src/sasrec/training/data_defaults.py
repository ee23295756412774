"""Settings the data chooses: dropout, validation spacing, the item bias's start."""

import dataclasses
import math

import polars as pl
import torch

from sasrec.config import HParams
from sasrec.model import PAD
from sasrec.scoring import item_popularity


def log_popularity(train: pl.DataFrame, num_items: int) -> torch.Tensor:
    """(num_items + 1,) log(1 + count) of each item in `train`, zero-mean over items; 0 at PAD."""
    log_counts = torch.log1p(item_popularity(train, num_items)).float()
    log_counts[1:] -= log_counts[1:].mean()
    log_counts[PAD] = 0.0
    return log_counts


# Dropout against the data's density, in training targets per item: the paper's Games data
# (7.7 per item) and Wikipedia edits (6.2) gain most with heavy dropout, MovieLens-100K (23)
# and bigram chains (30-120) with light; the quality matrix in docs/benchmarks.md.
SPARSE, DENSE = (10.0, 0.7), (30.0, 0.2)  # (targets per item, dropout)


def dropout_for_data(lengths: torch.Tensor, num_items: int) -> float:
    """0.7 up to 10 training targets per item, 0.2 from 30, log-linear in between.

    lengths: (U,) items per training sequence as the model reads them (within max_len + 1).
    """
    targets_per_item = float((lengths - 1).clamp_min(0).sum()) / num_items
    (sparse, sparse_dropout), (dense, dense_dropout) = SPARSE, DENSE
    position = math.log(max(targets_per_item, 1e-9) / sparse) / math.log(dense / sparse)
    share = min(max(position, 0.0), 1.0)  # 0 at the sparse end, 1 at the dense end
    return round(sparse_dropout + share * (dense_dropout - sparse_dropout), 3)


# Early stopping's patience counts validation passes. On the 5-core data (370 batches an
# epoch) a pass every 5 epochs makes 9,300 steps without a gain end a run. At 0-core (2,040
# batches an epoch) those 25 epochs alone take 24 of the pipeline's 30-minute budget
# (docs/benchmarks.md, issue 27). So a pass comes every VALIDATION_STEPS steps, rounded down
# to whole epochs, at most every 5: about the same steps of patience at any size.
VALIDATION_STEPS, MAX_EVAL_EVERY = 2048, 5


def eval_every_for_data(num_sequences: int, batch_size: int) -> int:
    """Epochs between validation passes: VALIDATION_STEPS // batches per epoch, within 1..5.

    num_sequences: training sequences of at least 2 items (one row of a batch each).
    """
    batches_per_epoch = max(math.ceil(num_sequences / batch_size), 1)
    return min(max(VALIDATION_STEPS // batches_per_epoch, 1), MAX_EVAL_EVERY)


def with_data_defaults(hparams: HParams, lengths: torch.Tensor, num_items: int) -> HParams:
    """`hparams` with what they leave to the data (None) chosen: dropout and `eval_every`.

    lengths: (U,) items per training sequence as the model reads them.
    """
    chosen = {}
    if hparams.dropout is None:
        chosen["dropout"] = dropout_for_data(lengths, num_items)
    if hparams.eval_every is None:
        chosen["eval_every"] = eval_every_for_data(len(lengths), hparams.batch_size)
    return dataclasses.replace(hparams, **chosen)
