"""The answer of a run in a few lines: the console's last table and the report's first.

The model against both baselines on NDCG@10 and HR@10 (full catalogue), the paper's
sampled figure beside it, the winner of a sweep and the promotion decision.
"""

import json
from typing import Any

from sasrec.registry.sweep import trained, winner

SCORERS = {"SASRec": "", "transition": "baseline_transition_", "popularity": "baseline_popularity_"}
COLUMNS = ["", "NDCG@10", "HR@10", "sampled NDCG@10"]


def scorer_rows(metrics: dict[str, float]) -> list[list[Any]]:
    """[scorer, NDCG@10, HR@10, sampled NDCG@10 or ""] for the model and both baselines."""
    return [
        [name, metrics[f"{prefix}ndcg@10"], metrics[f"{prefix}hit@10"],
         metrics.get(f"{prefix}sampled_ndcg@10", "")]
        for name, prefix in SCORERS.items()
    ]  # fmt: skip


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
    lines = ["", "Test users, full catalogue (sampled: 100 random negatives, as in the paper)"]
    lines.append(console_table(scorer_rows(metrics)))
    for label, line in (("sweep", sweep_line(trials)), ("promotion", promotion_line(decision))):
        if line:
            lines.append(f"{label}: {line}")
    width = max(map(len, places))
    lines += [f"{name.ljust(width)}  {place}" for name, place in places.items()]
    return "\n".join(lines)
