"""The evaluation report's plots on small data, and its links to other artifacts."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import pytest

from sasrec.data.report import sequence_length_plot
from sasrec.evaluation.report import merge_small_buckets
from sasrec.pages import artifact_link


def breakdown(buckets: list[tuple[str, int, float, float]]) -> pl.DataFrame:
    """One scorer's rows of a history-length breakdown: (bucket, users, ndcg@10, hit@10)."""
    return pl.DataFrame(
        [("history_length", b, users, "sasrec", ndcg, hit) for b, users, ndcg, hit in buckets],
        schema=["breakdown", "bucket", "users", "scorer", "ndcg@10", "hit@10"],
        orient="row",
    )


def test_small_buckets_merge_into_their_smaller_neighbour_with_user_weighted_figures():
    part = breakdown([
        ("1-2", 200, 0.10, 0.20),
        ("3-4", 10, 0.40, 1.00),  # merges into 5-9 (30 users), the smaller neighbour
        ("5-9", 30, 0.20, 0.50),
        ("10-19", 300, 0.30, 0.60),
        ("20-49", 5, 0.50, 0.80),  # 50+ goes first (fewest), into 20-49: "20+", 9 users,
        ("50+", 4, 0.05, 0.25),  # still too few, then into 10-19: "10+"
    ])  # fmt: skip
    merged = merge_small_buckets(part, min_users=20)
    assert merged["bucket"].to_list() == ["1-2", "3-9", "10+"]
    assert merged["users"].to_list() == [200, 40, 309]
    row = merged.row(1, named=True)  # by hand: (10 * 0.40 + 30 * 0.20) / 40
    assert row["ndcg@10"] == pytest.approx(0.25) and row["hit@10"] == pytest.approx(0.625)
    last = (300 * 0.30 + 5 * 0.50 + 4 * 0.05) / 309
    assert merged.row(2, named=True)["ndcg@10"] == pytest.approx(last)
    # At 50 the 40 users of 3-9 go on into 1-2, their smaller neighbour.
    assert merge_small_buckets(part, min_users=50)["bucket"].to_list() == ["1-9", "10+"]
    assert merged.columns == part.columns


def test_buckets_all_small_become_one_and_big_ones_are_left_alone():
    part = breakdown([("0-9", 20, 0.1, 0.2), ("10-99", 15, 0.3, 0.4), ("100-999", 5, 0.5, 0.6)])
    merged = merge_small_buckets(part, min_users=50)
    assert merged["bucket"].to_list() == ["0-999"] and merged["users"].to_list() == [40]
    assert merge_small_buckets(part, min_users=5).equals(part)


def test_merged_buckets_keep_every_scorer_apart():
    part = pl.concat([
        breakdown([("1-2", 10, 0.1, 0.1), ("3-4", 90, 0.2, 0.2)]),
        breakdown([("1-2", 10, 0.5, 0.5), ("3-4", 90, 0.0, 0.0)]).with_columns(
            scorer=pl.lit("popularity")
        ),
    ])  # fmt: skip
    merged = merge_small_buckets(part, min_users=50)
    figures = dict(zip(merged["scorer"], merged["ndcg@10"], strict=True))
    assert figures == pytest.approx({"sasrec": 0.19, "popularity": 0.05})
    assert set(merged["bucket"]) == {"1-4"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/gcs/bucket/root/sequences/report.html",
         '<a href="https://storage.cloud.google.com/bucket/root/sequences/report.html">'),
        ("/s3/bucket/root/report.html", "<code>s3://bucket/root/report.html</code>"),
        ("/minio/mlpipeline/v2/report.html", "<code>minio://mlpipeline/v2/report.html</code>"),
        ("/tmp/run/report.html", '<a href="file:///tmp/run/report.html">'),
    ],
)  # fmt: skip
def test_a_link_to_an_artifact_works_where_the_report_is_read(path, expected):
    assert expected in artifact_link(Path(path), "the sequences report")


def test_the_sequence_length_histogram_has_few_bins_for_few_users():
    lengths = np.random.default_rng(0).zipf(2.0, 300).clip(1, 50)
    figure = sequence_length_plot(lengths)
    bars = [patch.get_height() for patch in figure.axes[0].patches]
    plt.close(figure)
    assert len(bars) <= 9  # log2(300) + 1 bins at most: 30 would leave most of them empty
    assert sum(bars) == 300
