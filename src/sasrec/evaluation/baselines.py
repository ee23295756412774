"""Baselines scored by the same evaluation code as the model: popularity and transitions.

Both are fitted on the training sequences and are `Scorer`s: (B, L) left-padded item
indices -> (B, num_items + 1) scores.
"""

import polars as pl
import torch

from sasrec.data import schema


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
            .sort("src", "dst")
        )
        # The (N + 1, N + 1) matrix of counts, row a, column b = times b followed a, in
        # CSR form: row a's transitions are next_items[row_starts[a]:row_starts[a + 1]].
        sources = torch.from_numpy(pairs["src"].to_numpy().astype("int64"))
        self.row_starts = torch.zeros(num_columns + 1, dtype=torch.int64)  # (N + 2,)
        self.row_starts[1:] = torch.bincount(sources, minlength=num_columns).cumsum(0)
        self.next_items = torch.from_numpy(pairs["dst"].to_numpy().astype("int64"))  # (T,)
        self.counts = torch.from_numpy(pairs["len"].to_numpy().astype("float32"))  # (T,)
        self.tie_break = popularity.float() / (popularity.max().float() + 1.0)

    def __call__(self, item_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, N + 1): transition counts from each row's most recent item."""
        last = item_ids[:, -1].cpu()  # left padding: the last column is the latest item
        # Row `last` of the CSR matrix for each user, written into a copy of the tie-break
        # row: only the transitions are touched. PAD's row is empty (nothing follows it).
        starts = self.row_starts[last]  # (B,)
        lengths = self.row_starts[last + 1] - starts  # (B,)
        users = torch.repeat_interleave(torch.arange(len(last)), lengths)  # (T_B,)
        first_in_batch = lengths.cumsum(0) - lengths  # (B,) each user's first place in T_B
        positions = torch.arange(len(users)) - first_in_batch[users] + starts[users]
        scores = self.tie_break.repeat(len(last), 1)  # (B, N + 1)
        scores.index_put_(
            (users, self.next_items[positions]), self.counts[positions], accumulate=True
        )
        return scores.to(item_ids.device)
