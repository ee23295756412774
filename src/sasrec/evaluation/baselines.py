"""Baselines scored by the same evaluation code as the model: popularity and transitions.

Both are fitted on the training sequences and are `Scorer`s: (B, L) left-padded item
indices -> (B, num_items + 1) scores.
"""

import polars as pl
import torch

from sasrec.data import schema
from sasrec.model import PAD


class PopularityScorer:
    """Scores every item by its training count, whatever the history."""

    def __init__(self, popularity: torch.Tensor) -> None:
        self.popularity = popularity.float()  # (N + 1,)

    def __call__(self, item_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, N + 1), the same row for every user (a copy: callers mask it)."""
        return self.popularity.to(item_ids.device).repeat(len(item_ids), 1)


class TransitionScorer:
    """First-order item-to-item model: how often item b came right after the user's last item.

    Ties (and users whose last item was never followed by anything) are broken by
    popularity, which is scaled below 1 so that it never outweighs one transition.
    """

    def __init__(self, train: pl.DataFrame, popularity: torch.Tensor) -> None:
        num_columns = len(popularity)
        pairs = (
            train.select(
                pl.col(schema.ITEM_SEQUENCE)
                .list.slice(0, pl.col(schema.ITEM_SEQUENCE).list.len() - 1)
                .alias("src"),
                pl.col(schema.ITEM_SEQUENCE).list.slice(1).alias("dst"),
            )
            .explode("src", "dst")
            .drop_nulls()
            .group_by("src", "dst")
            .len()
        )
        indices = torch.from_numpy(pairs.select("src", "dst").to_numpy().T.astype("int64"))
        counts = torch.from_numpy(pairs["len"].to_numpy().astype("float32"))
        self.transitions = torch.sparse_coo_tensor(
            indices, counts, (num_columns, num_columns), check_invariants=True
        ).coalesce()  # (N + 1, N + 1): row a, column b = times b followed a
        self.tie_break = popularity.float() / (popularity.max().float() + 1.0)

    def __call__(self, item_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, N + 1): transition counts from each row's most recent item."""
        last = item_ids[:, -1].cpu()  # left padding: the last column is the latest item
        rows = self.transitions.index_select(0, last).to_dense()  # (B, N + 1)
        rows[last == PAD] = 0.0
        return (rows + self.tie_break).to(item_ids.device)
