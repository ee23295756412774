"""Item-to-item transitions of the training sequences: how often item b came right after a.

Shared by the transition baseline (`sasrec.evaluation.baselines`) and the model, whose
scores can mix in the transition probabilities of the user's last item (`SASRec.forward`,
`sasrec.training.transition_mix`).
"""

from dataclasses import dataclass

import polars as pl
import torch

from sasrec.data import schema


@dataclass(frozen=True)
class Transitions:
    """The (N + 1, N + 1) matrix of counts in CSR form.

    Row a (the items that followed item a) is next_items[row_starts[a]:row_starts[a + 1]],
    counts[...] times each; PAD's row is empty.
    """

    row_starts: torch.Tensor  # (N + 2,) int64
    next_items: torch.Tensor  # (T,) int64, ascending within a row
    counts: torch.Tensor  # (T,) float32

    @classmethod
    def of_sequences(cls, train: pl.DataFrame, num_items: int) -> "Transitions":
        """The transitions within each training sequence of `schema.SEQUENCES_SCHEMA`."""
        sequence = pl.col(schema.ITEM_SEQUENCE)
        pairs = (
            train.select(
                sequence.list.slice(0, sequence.list.len() - 1).alias("src"),
                sequence.list.slice(1).alias("dst"),
            )
            .explode("src", "dst")
            .drop_nulls()
            .group_by("src", "dst")
            .len()
            .sort("src", "dst")
        )
        sources = torch.from_numpy(pairs["src"].to_numpy().astype("int64"))
        row_starts = torch.zeros(num_items + 2, dtype=torch.int64)
        row_starts[1:] = torch.bincount(sources, minlength=num_items + 1).cumsum(0)
        return cls(
            row_starts,
            torch.from_numpy(pairs["dst"].to_numpy().astype("int64")),
            torch.from_numpy(pairs["len"].to_numpy().astype("float32")),
        )

    def probabilities(self) -> torch.Tensor:
        """(T,) each count over its row's total: P(b follows a) in the training sequences."""
        sources = self.sources()
        row_totals = torch.zeros(len(self.row_starts) - 1).index_add_(0, sources, self.counts)
        return self.counts / row_totals[sources]

    def sources(self) -> torch.Tensor:
        """(T,) the row (the earlier item) of each transition."""
        row_lengths = self.row_starts.diff()
        return torch.repeat_interleave(torch.arange(len(row_lengths)), row_lengths)
