import polars as pl
import torch

from sasrec.tensors import length_bucketed_batches, pad_left


def test_pad_left_keeps_the_most_recent_items():
    series = pl.Series([[1, 2, 3, 4], [5], [], [6, 7]])
    assert pad_left(series, 3).tolist() == [[2, 3, 4], [0, 0, 5], [0, 0, 0], [0, 6, 7]]
    assert pad_left(series).tolist() == [[1, 2, 3, 4], [0, 0, 0, 5], [0, 0, 0, 0], [0, 0, 6, 7]]
    assert pad_left(series).dtype == torch.int64


def test_length_buckets_cover_every_row_once_and_group_lengths():
    lengths = torch.tensor([2, 50, 3, 2, 50, 3, 2, 50])
    batches = length_bucketed_batches(lengths, 3, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == list(range(8))
    assert sorted(tuple(sorted(lengths[b].tolist())) for b in batches) == [
        (2, 2, 2),
        (3, 3, 50),
        (50, 50),
    ]


def test_length_buckets_are_reproducible_by_seed():
    lengths = torch.randint(2, 50, (100,))
    first = length_bucketed_batches(lengths, 8, torch.Generator().manual_seed(1))
    second = length_bucketed_batches(lengths, 8, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
