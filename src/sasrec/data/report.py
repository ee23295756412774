"""The sequences step's report: sequence lengths and item popularity, as one HTML page."""

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from sasrec.data import schema
from sasrec.pages import figure_html, html_page, table_html


def sequence_length_plot(lengths: np.ndarray) -> plt.Figure:
    """Users per sequence length, on log-spaced bins (lengths span orders of magnitude).

    Sturges' count of bins (log2 of the users, plus one; 5 to 30): few users spread over
    30 bins would leave most of them empty.
    """
    figure, axis = plt.subplots(figsize=(6, 3.6))
    num_bins = int(np.clip(np.log2(max(len(lengths), 1)) + 1, 5, 30))
    bins = np.unique(np.logspace(0, np.log10(lengths.max() + 1), num_bins).astype(int))
    axis.hist(lengths, bins=bins)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("interactions per user")
    axis.set_ylabel("users")
    axis.set_title("Sequence lengths")
    axis.grid(alpha=0.3)
    return figure


def item_popularity_plot(counts: np.ndarray) -> plt.Figure:
    """Interactions per item against the item's popularity rank (log-log: the long tail)."""
    figure, axis = plt.subplots(figsize=(6, 3.6))
    ranked = np.sort(counts)[::-1]
    axis.loglog(np.arange(1, len(ranked) + 1), ranked)
    axis.set_xlabel("item popularity rank")
    axis.set_ylabel("interactions")
    axis.set_title("Item popularity")
    axis.grid(alpha=0.3)
    return figure


def render_sequence_report(sequences: pl.DataFrame, stats: dict[str, Any]) -> str:
    """The page: the stats table and the two plots."""
    items = sequences[schema.ITEM_SEQUENCE]
    lengths = items.list.len().to_numpy()
    counts = items.explode().value_counts()["count"].to_numpy()
    return html_page(
        "SASRec sequences report",
        [
            "<h1>Sequences</h1>",
            table_html(["statistic", "value"], [[k, v] for k, v in stats.items()]),
            figure_html(sequence_length_plot(lengths), "sequence lengths"),
            figure_html(item_popularity_plot(counts), "item popularity"),
        ],
    )
