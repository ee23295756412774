"""Settings the data chooses: dropout and tied embeddings by its density, the bias's start."""

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


def targets_per_item(lengths: torch.Tensor, num_items: int) -> float:
    """Training targets (items after a user's first) per catalogue item: the data's density.

    lengths: (U,) items per training sequence as the model reads them (within max_len + 1).
    """
    return float((lengths - 1).clamp_min(0).sum()) / num_items


# Dropout against the data's density, in training targets per item: the paper's Games data
# (7.7 per item) and Wikipedia edits (6.2) gain most with heavy dropout, MovieLens-100K (23)
# and bigram chains (30-120) with light; the quality matrix in docs/benchmarks.md.
SPARSE, DENSE = (10.0, 0.7), (30.0, 0.2)  # (targets per item, dropout)
# Output embeddings of their own pay on dense data only: on the bigram chains (30-120
# targets per item) they lift HR@10 by 14-33%; on MovieLens-100K (23), the paper's Games
# data (7.7) and Wikipedia (6.2) they lose 8-23% of NDCG@10, each output row learning from
# too few targets. The threshold sits between 23 and 30 (docs/benchmarks.md, issue 28).
UNTIED_FROM = 26.0


def dropout_for_data(lengths: torch.Tensor, num_items: int) -> float:
    """0.7 up to 10 training targets per item, 0.2 from 30, log-linear in between.

    lengths: (U,) items per training sequence as the model reads them (within max_len + 1).
    """
    (sparse, sparse_dropout), (dense, dense_dropout) = SPARSE, DENSE
    density = max(targets_per_item(lengths, num_items), 1e-9)
    position = math.log(density / sparse) / math.log(dense / sparse)
    share = min(max(position, 0.0), 1.0)  # 0 at the sparse end, 1 at the dense end
    return round(sparse_dropout + share * (dense_dropout - sparse_dropout), 3)


def tied_for_data(lengths: torch.Tensor, num_items: int) -> bool:
    """Whether items are scored with their input embeddings: below UNTIED_FROM targets per item."""
    return targets_per_item(lengths, num_items) < UNTIED_FROM


def with_data_defaults(hparams: HParams, lengths: torch.Tensor, num_items: int) -> HParams:
    """`hparams` with what they leave to the data (None) chosen for it: dropout, tied embeddings."""
    chosen = {}
    if hparams.dropout is None:
        chosen["dropout"] = dropout_for_data(lengths, num_items)
    if hparams.tied_embeddings is None:
        chosen["tied_embeddings"] = tied_for_data(lengths, num_items)
    return dataclasses.replace(hparams, **chosen)
