"""The evaluation report: one self-contained HTML file with tables and matplotlib plots."""

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import polars as pl

from sasrec.evaluation.headline import COLUMNS, promotion_line, scorer_rows, sweep_line, warnings
from sasrec.metrics import KS
from sasrec.pages import artifact_link, figure_html, html_page, table_html

SCORERS = ("sasrec", "transition", "popularity")
HEADLINE = ("ndcg@10", "hit@10", "mrr@10")
BEYOND_ACCURACY = ("coverage@10", "mean_popularity@10")
METRICS = ("ndcg@10", "hit@10")  # the columns of a breakdown


@dataclass(frozen=True)
class Example:
    """One test user: recent history, held-out item and top recommendations, original ids."""

    user_id: str
    history: list[str]
    target: str
    recommendations: list[str]


# Lines that coincide (two baselines often do at large K) stay visible: each scorer has its
# own dash and marker, the later drawn thinner and smaller, so the earlier shows round it.
LINE_STYLES = {
    "sasrec": {"linestyle": "-", "marker": "o", "markersize": 9, "linewidth": 3.0},
    "transition": {"linestyle": "--", "marker": "s", "markersize": 6, "linewidth": 2.0},
    "popularity": {"linestyle": ":", "marker": "^", "markersize": 4, "linewidth": 1.5},
}
MIN_BUCKET_USERS = 50  # a breakdown bucket with fewer test users is merged into a neighbour


def metric_at_k_plot(metrics: dict[str, dict[str, float]]) -> plt.Figure:
    """NDCG@K and HR@K against K for every scorer."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, name in zip(axes, ("ndcg", "hit"), strict=True):
        for scorer, values in metrics.items():
            axis.plot(
                KS, [values[f"{name}@{k}"] for k in KS], label=scorer, **LINE_STYLES.get(scorer, {})
            )
        axis.set_xscale("log")
        axis.set_xticks(KS, [str(k) for k in KS])
        axis.set_xlabel("K")
        axis.set_ylabel(f"{'HR' if name == 'hit' else 'NDCG'}@K")
        axis.grid(alpha=0.3)
    axes[0].legend()
    figure.suptitle("Full-catalogue metrics at K (test users)")
    return figure


def breakdown_plot(breakdown: pl.DataFrame, title: str) -> plt.Figure:
    """Grouped bars of NDCG@10 per bucket and scorer, with user counts under the buckets."""
    buckets = breakdown["bucket"].unique(maintain_order=True).to_list()
    users = breakdown.filter(pl.col("scorer") == SCORERS[0])["users"].to_list()
    figure, axis = plt.subplots(figsize=(10, 3.6))
    width = 0.8 / len(SCORERS)
    for i, scorer in enumerate(SCORERS):
        rows = breakdown.filter(pl.col("scorer") == scorer)
        positions = [buckets.index(b) + (i - 1) * width for b in rows["bucket"]]
        axis.bar(positions, rows["ndcg@10"].to_list(), width, label=scorer)
    axis.set_xticks(
        range(len(buckets)), [f"{b}\n{n:,} users" for b, n in zip(buckets, users, strict=True)]
    )
    axis.set_ylabel("NDCG@10")
    axis.set_title(title)
    axis.legend()
    axis.grid(axis="y", alpha=0.3)
    return figure


def _bucket_bounds(label: str) -> tuple[int, int | None]:
    """A bucket's first and last value: "3-4" -> (3, 4), "7" -> (7, 7), "50+" -> (50, None)."""
    if label.endswith("+"):
        return int(label[:-1]), None
    low, _, high = label.partition("-")
    return int(low), int(high or low)


def _bucket_label(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else (f"{low}-{high}" if high > low else str(low))


def merge_small_buckets(part: pl.DataFrame, min_users: int = MIN_BUCKET_USERS) -> pl.DataFrame:
    """One breakdown with every bucket of fewer than `min_users` users merged into a neighbour.

    The smallest bucket goes first, into its smaller neighbour, until every bucket has
    `min_users` or one bucket is left. A merged bucket's NDCG@10 and HR@10 are the
    user-weighted means of its parts: the figures over its users.

    Args:
        part: Rows of one breakdown (see `evaluate.breakdowns`), buckets in order.
        min_users: The fewest test users a bucket keeps its own bar with.
    """
    buckets = part.select("bucket", "users").unique("bucket", maintain_order=True).rows()
    groups = [([label], users) for label, users in buckets]
    while len(groups) > 1 and min(users for _, users in groups) < min_users:
        small = min(range(len(groups)), key=lambda i: groups[i][1])
        neighbours = [i for i in (small - 1, small + 1) if 0 <= i < len(groups)]
        other = min(neighbours, key=lambda i: groups[i][1])
        first, second = sorted((small, other))
        groups[first : second + 1] = [
            (groups[first][0] + groups[second][0], groups[first][1] + groups[second][1])
        ]
    merged_label = {
        label: _bucket_label(_bucket_bounds(labels[0])[0], _bucket_bounds(labels[-1])[1])
        for labels, _ in groups
        for label in labels
    }
    weighted = [(pl.col(m) * pl.col("users")).sum() / pl.col("users").sum() for m in METRICS]
    return (
        part.with_columns(pl.col("bucket").replace_strict(merged_label))
        .group_by("breakdown", "bucket", "scorer", maintain_order=True)
        .agg(pl.col("users").sum(), *(w.alias(m) for w, m in zip(weighted, METRICS, strict=True)))
        .select(part.columns)
    )


def breakdown_figure(part: pl.DataFrame, title: str) -> str:
    """The breakdown's bars, or one line saying why there are none (all users in one bucket)."""
    buckets = part["bucket"].unique().to_list()
    if len(buckets) > 1:
        return figure_html(breakdown_plot(part, title), title)
    users = int(part["users"][0]) if len(part) else 0
    return (
        f'<p class="note"><b>{html.escape(title)}:</b> all {users:,} test users fall in one '
        f"bucket ({html.escape(str(buckets[0]) if buckets else 'none')}) once buckets of fewer "
        f"than {MIN_BUCKET_USERS} users are merged: nothing to compare.</p>"
    )


def lift(model: float, baseline: float) -> str:
    """Relative improvement of the model over a baseline, as text."""
    return f"{(model / baseline - 1) * 100:+.1f}%" if baseline > 0 else "n/a"


def render_report(
    metrics: dict[str, float],
    scorer_metrics: dict[str, dict[str, float]],
    breakdowns: pl.DataFrame,
    examples: list[Example],
    context: dict[str, Any],
    trials: list[dict[str, Any]] | None = None,
    promotion: dict[str, Any] | None = None,
    sequences_report: Path | None = None,
) -> str:
    """The report page: the headline, then the plots, then the details.

    Args:
        metrics: The flat metrics of metrics.json.
        scorer_metrics: Full-catalogue test metrics and beyond-accuracy figures per scorer
            (`sasrec`, `transition`, `popularity`).
        breakdowns: Output of `evaluate.breakdowns`.
        examples: A few test users to show.
        context: Data and training facts, shown last.
        trials: A sweep's trials table (`sweep.trials_table`); None without a sweep.
        promotion: The promote step's decision; None without one.
        sequences_report: The data's report (the sequences step's), linked under the headline.
    """
    breakdown_parts = {
        title: merge_small_buckets(breakdowns.filter(pl.col("breakdown") == name))
        for name, title in (
            ("history_length", "NDCG@10 by the user's history length"),
            ("target_popularity", "NDCG@10 by the held-out item's training count"),
        )
    }
    sections = [
        *_headline_section(metrics, scorer_metrics, trials, promotion, sequences_report),
        figure_html(metric_at_k_plot(scorer_metrics), "metrics at K"),
        *(breakdown_figure(part, title) for title, part in breakdown_parts.items()),
        *_trials_section(trials),
        *_details_section(metrics, scorer_metrics, breakdown_parts, examples, context),
    ]
    return html_page("SASRec evaluation report", sections)


def _headline_section(
    metrics: dict[str, float],
    scorer_metrics: dict[str, dict[str, float]],
    trials: list[dict[str, Any]] | None,
    promotion: dict[str, Any] | None,
    sequences_report: Path | None,
) -> list[str]:
    """The answer first: one sentence, the headline table, the sweep, promotion and data lines."""
    model = scorer_metrics["sasrec"]
    lead = (
        f"SASRec finds the held-out item in its top 10 for {metrics['hit@10']:.1%} of "
        f"{int(metrics['num_test_users']):,} test users (NDCG@10 {metrics['ndcg@10']:.4f}): "
        f"{lift(model['ndcg@10'], scorer_metrics['transition']['ndcg@10'])} against the "
        f"transition baseline, {lift(model['ndcg@10'], scorer_metrics['popularity']['ndcg@10'])}"
        " against popularity."
    )
    notes = [
        f"<p><b>{label}:</b> {html.escape(line)}</p>"
        for label, line in (("Sweep", sweep_line(trials)), ("Promotion", promotion_line(promotion)))
        if line
    ]
    if sequences_report:
        link = artifact_link(sequences_report, "the sequences report")
        notes.append(
            f"<p><b>Data:</b> {link}: the filters, the splits, history lengths and item counts.</p>"
        )
    return [
        "<h1>SASRec evaluation report</h1>",
        '<section class="headline">',
        f'<p class="lead">{html.escape(lead)}</p>',
        *[
            f'<p class="warning"><b>Warning:</b> {html.escape(line)}</p>'
            for line in warnings(metrics)
        ],
        table_html(COLUMNS, scorer_rows(metrics)),
        '<p class="note">Test users, full catalogue, history excluded; sampled: among 100 '
        "random items the user never had, as in the paper (it overstates quality); ±: the 95% "
        "confidence interval over test users.</p>",
        *notes,
        "</section>",
    ]


def _trials_section(trials: list[dict[str, Any]] | None) -> list[str]:
    """A sweep's trials, failed ones with their cause; nothing without a sweep."""
    if not trials:
        return []
    return [
        "<h2>Sweep trials (chosen on validation NDCG@10)</h2>",
        table_html(
            ["trial", "hparams", "val ndcg@10", "val hit@10", "best epoch", "MLflow run",
             "failed"],
            [[t["trial"], json.dumps(t["hparams"]), t["val_ndcg@10"], t["val_hit@10"],
              t["best_epoch"], t["mlflow_run_id"], t.get("error", "")] for t in trials],
        ),
    ]  # fmt: skip


def _details_section(
    metrics: dict[str, float],
    scorer_metrics: dict[str, dict[str, float]],
    breakdown_parts: dict[str, pl.DataFrame],
    examples: list[Example],
    context: dict[str, Any],
) -> list[str]:
    """Every table behind the headline and the plots, then examples and the run's facts."""
    model = scorer_metrics["sasrec"]
    headline_rows = [
        [scorer, *(scorer_metrics[scorer][m] for m in (*HEADLINE, *BEYOND_ACCURACY))]
        for scorer in SCORERS
    ]
    lift_rows = [
        [baseline, *(lift(model[m], scorer_metrics[baseline][m]) for m in HEADLINE)]
        for baseline in SCORERS[1:]
    ]
    protocol_rows = [
        [protocol, *(metrics[f"{prefix}{m}@{k}"] for m in ("ndcg", "hit") for k in (10, 50))]
        for protocol, prefix in (
            ("full catalogue, history excluded", ""),
            ("100 uniform negatives (the paper's)", "sampled_"),
            ("100 popularity-sampled negatives", "popsampled_"),
        )
    ]
    validation_rows = [[m, metrics[f"val_{m}"], metrics[m]] for m in HEADLINE]
    example_rows = [
        [
            e.user_id,
            " → ".join(e.history),
            e.target,
            ", ".join(f"<<{r}>>" if r == e.target else r for r in e.recommendations),
        ]
        for e in examples
    ]
    sections = [
        "<h2>Details</h2>",
        "<h3>Model against baselines, with beyond-accuracy figures</h3>",
        table_html(["scorer", *HEADLINE, "coverage@10", "mean popularity@10"], headline_rows),
        "<h3>Lift of SASRec over each baseline</h3>",
        table_html(["baseline", *HEADLINE], lift_rows),
        "<h3>Protocols (SASRec, test users)</h3>",
        table_html(["protocol", "ndcg@10", "ndcg@50", "hit@10", "hit@50"], protocol_rows),
        "<h3>Validation and test (SASRec, full catalogue)</h3>",
        table_html(["metric", "validation", "test"], validation_rows),
    ]
    for title, part in breakdown_parts.items():
        sections += [f"<h3>{html.escape(title)}</h3>",
                     table_html(part.columns, [list(row) for row in part.rows()])]  # fmt: skip
    return [
        *sections,
        "<h3>Example test users</h3>",
        "<p>Most recent history items, the held-out item, and SASRec's top 10 "
        "(the held-out item in &lt;&lt; &gt;&gt; when it was found).</p>",
        table_html(["user", "recent history", "held out", "top 10"], example_rows),
        "<h3>Data and training</h3>",
        table_html(["fact", "value"], [[k, v] for k, v in context.items()]),
    ]
