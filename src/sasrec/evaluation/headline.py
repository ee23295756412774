"""The answer of a run in a few lines: the console's last table and the report's first.

The model against both baselines on NDCG@10 and HR@10 (full catalogue), the paper's
sampled figure beside it, the winner of a sweep and the promotion decision.
"""

import argparse
import json
from pathlib import Path
from typing import Any

from sasrec.filenames import run_model_uri
from sasrec.io import read_json
from sasrec.registry.sweep import trained, winner

SCORERS = {"SASRec": "", "transition": "baseline_transition_", "popularity": "baseline_popularity_"}
COLUMNS = ["", "NDCG@10", "HR@10", "sampled NDCG@10"]


def with_interval(metrics: dict[str, float], key: str) -> str | float:
    """`key`'s value and, when metrics.json has it, its 95% interval: "0.0581 ±0.0024"."""
    half_width = metrics.get(f"{key}_ci95")
    return metrics[key] if half_width is None else f"{metrics[key]:.4f} ±{half_width:.4f}"


def scorer_rows(metrics: dict[str, float]) -> list[list[Any]]:
    """[scorer, NDCG@10, HR@10, sampled NDCG@10 or ""] for the model and both baselines."""
    return [
        [name, with_interval(metrics, f"{prefix}ndcg@10"),
         with_interval(metrics, f"{prefix}hit@10"), metrics.get(f"{prefix}sampled_ndcg@10", "")]
        for name, prefix in SCORERS.items()
    ]  # fmt: skip


SMALL_TEST_SET = 1_000  # test users below which the headline says it cannot tell much


def warnings(metrics: dict[str, float]) -> list[str]:
    """What the headline must not let pass quietly: a model that loses, a test set too small.

    A model at or below a baseline on NDCG@10 is flagged with the likely causes; fewer than
    SMALL_TEST_SET test users, or intervals of the model and a baseline that overlap, are
    called out as too few to tell.
    """
    lines = []
    model, users = metrics["ndcg@10"], int(metrics.get("num_test_users", 0))
    losses = [
        f"{name} {metrics[f'{prefix}ndcg@10']:.4f}"
        for name, prefix in list(SCORERS.items())[1:]
        if metrics[f"{prefix}ndcg@10"] >= model
    ]
    if losses:
        lines.append(
            f"SASRec (NDCG@10 {model:.4f}) does not beat the {' and the '.join(losses)} "
            "baseline: likely too little data or training for it (few interactions per item "
            "or user, too few epochs; see the report's history-length breakdown), or data "
            "whose order says little about the next item"
        )
    half_width = metrics.get("ndcg@10_ci95")
    if users < SMALL_TEST_SET:
        interval = f" (95% interval of NDCG@10: ±{half_width:.4f})" if half_width else ""
        lines.append(
            f"only {users:,} test users{interval}: too few to tell the scorers apart with "
            "confidence; evaluate on more users"
        )
    return lines


def clear_losses(metrics: dict[str, float]) -> list[str]:
    """The baselines the model does not clearly beat on NDCG@10; empty when it beats both.

    Clearly: the model's 95% interval lies wholly above the baseline's (without intervals in
    metrics.json, above the baseline's value).
    """
    model = metrics["ndcg@10"] - metrics.get("ndcg@10_ci95", 0.0)
    return [
        f"{name} {metrics[f'{prefix}ndcg@10']:.4f}"
        for name, prefix in list(SCORERS.items())[1:]
        if metrics[f"{prefix}ndcg@10"] + metrics.get(f"{prefix}ndcg@10_ci95", 0.0) >= model
    ]


def sweep_line(trials: list[dict[str, Any]] | None) -> str | None:
    """Which trial won, on what, against what; None without a sweep."""
    if not trials:
        return None
    best = winner(trials)
    others = ", ".join(
        f"{row['val_ndcg@10']:.4f}" for row in trained(trials) if row["trial"] != best["trial"]
    )
    failed = "".join(
        f"; trial {row['trial']} failed: {row['error']}" for row in trials if "error" in row
    )
    return (
        f"trial {best['trial']} of {len(trials)} won {json.dumps(best['hparams'])}: "
        f"validation NDCG@10 {best['val_ndcg@10']:.4f} (others {others or 'none'}){failed}"
    )


def promotion_line(decision: dict[str, Any] | None) -> str | None:
    """The promotion decision in words; None when there was no promote step."""
    if not decision:
        return None
    outcome = decision["decision"]
    if outcome == "not registered":
        return "not registered (register with --register-as NAME to promote)"
    model = f"{decision['registered_model_name']} version {decision['version']}"
    if outcome in ("first champion", "already champion"):
        return f"{model} is champion ({outcome})"
    metric, new, old = decision["metric"], decision["challenger_score"], decision["champion_score"]
    champion = f"version {decision['champion_version']}"
    if decision.get("champion_error"):
        return (
            f"{model} is champion now: {champion}, the champion, could not be loaded "
            f"({decision['champion_error']})"
        )
    if outcome == "promoted":
        return f"{model} is champion now: {metric} {new:.4f} > {old:.4f} of {champion}"
    return f"{model} registered, {champion} stays champion: {metric} {new:.4f} <= {old:.4f}"


def serve_command(training: dict[str, Any], decision: dict[str, Any] | None) -> str | None:
    """How to serve the run's model: `make serve` with its MLflow model URI (None: no run).

    `runs:/<run id>/model` works registered or not; a registered model also has
    `models:/<name>/<version>`. Both take the run's tracking URI, given first.
    """
    run_id = training.get("mlflow_run_id")
    if not run_id:
        return None
    uris = [run_model_uri(run_id)]
    if decision and decision.get("version"):
        uris.append(f"models:/{decision['registered_model_name']}/{decision['version']}")
    store = training.get("mlflow_tracking_uri")
    prefix = f"MLFLOW_TRACKING_URI={store} " if store else ""
    return f"{prefix}make serve MODEL={uris[0]}" + "".join(f"  (or {uri})" for uri in uris[1:])


def console_table(rows: list[list[Any]]) -> str:
    """Rows under COLUMNS, aligned, floats with 4 decimals."""
    cells = [COLUMNS] + [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def console_summary(
    metrics: dict[str, float],
    trials: list[dict[str, Any]] | None,
    decision: dict[str, Any] | None,
    places: dict[str, str],
) -> str:
    """What `sasrec run` prints last: the table, sweep and promotion, then where things are."""
    lines = [
        "",
        "Test users, full catalogue (sampled: 100 random negatives, as in the paper; "
        "±: 95% interval)",
    ]
    lines.append(console_table(scorer_rows(metrics)))
    lines += [f"warning: {line}" for line in warnings(metrics)]
    for label, line in (("sweep", sweep_line(trials)), ("promotion", promotion_line(decision))):
        if line:
            lines.append(f"{label}: {line}")
    width = max(map(len, places), default=0)
    lines += [f"{name.ljust(width)}  {place}" for name, place in places.items()]
    return "\n".join(lines)


def main() -> None:
    """`python -m sasrec.evaluation.headline METRICS_JSON`: exit 1 unless the model clearly wins.

    `make smoke` ends with it: its data has an order worth learning, so a model that does not
    beat both baselines there is a broken model, not bad luck.
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("metrics_json", type=Path, help="an evaluation's metrics.json")
    path = parser.parse_args().metrics_json
    if not path.is_file():
        parser.error(f"{path} is not a file: give the metrics.json of an evaluation")
    metrics = read_json(path)
    losses = clear_losses(metrics)
    if losses:
        raise SystemExit(
            f"SASRec NDCG@10 {with_interval(metrics, 'ndcg@10')} does not clearly beat "
            f"{' and '.join(losses)} (95% intervals overlap or lower)"
        )
    print(f"SASRec NDCG@10 {with_interval(metrics, 'ndcg@10')} clearly beats both baselines")


if __name__ == "__main__":
    main()
