"""Baselines scored by the same evaluation code as the model: popularity and transitions.

Both are fitted on the training sequences and are `Scorer`s: (B, L) left-padded item
indices -> (B, num_items + 1) scores.
"""

import polars as pl
import torch

from sasrec.model import row_entries
from sasrec.transitions import Transitions


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
        self.transitions = Transitions.of_sequences(train, len(popularity) - 1)
        self.tie_break = popularity.float() / (popularity.max().float() + 1.0)

    def __call__(self, item_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, N + 1): transition counts from each row's most recent item."""
        last = item_ids[:, -1].cpu()  # left padding: the last column is the latest item
        # Row `last` of the count matrix for each user, written into a copy of the tie-break
        # row: only the transitions are touched.
        users, positions = row_entries(self.transitions.row_starts, last)
        scores = self.tie_break.repeat(len(last), 1)  # (B, N + 1)
        scores.index_put_(
            (users, self.transitions.next_items[positions]),
            self.transitions.counts[positions],
            accumulate=True,
        )
        return scores.to(item_ids.device)
