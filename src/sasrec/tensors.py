"""Ragged item lists (polars) to padded tensors, and batch plans, without per-row Python."""

import numpy as np
import polars as pl
import torch

from sasrec.model import PAD


def pad_left(sequences: pl.Series, width: int | None = None) -> torch.Tensor:
    """Left-pad item lists with 0, keeping each list's last `width` items.

    Args:
        sequences: A list[int] series, oldest item first.
        width: Columns of the result; None for the longest list's length.

    Returns:
        (len(sequences), width) int64 tensor; the most recent item is in the last column.
    """
    lengths = sequences.list.len().to_numpy().astype(np.int64)
    if width is None:
        width = int(lengths.max()) if len(lengths) else 0
    tails = sequences.list.tail(width)
    kept = np.minimum(lengths, width)
    padded = np.full((len(sequences), width), PAD, dtype=np.int64)
    values = tails.explode().drop_nulls().to_numpy().astype(np.int64)
    rows = np.repeat(np.arange(len(sequences)), kept)
    starts = np.cumsum(kept) - kept  # offset of each row's first value in `values`
    cols = np.arange(len(values)) - np.repeat(starts, kept) + np.repeat(width - kept, kept)
    padded[rows, cols] = values
    return torch.from_numpy(padded)


def length_bucketed_batches(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Row indices in batches of similar length, batches in random order.

    Most sequences are short, so grouping by length lets each batch be trimmed to its own
    longest sequence instead of max_len. Equal lengths are shuffled.
    """
    jitter = torch.rand(len(lengths), generator=generator)
    order = torch.argsort(lengths.double() + jitter)
    batches = list(order.split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]
