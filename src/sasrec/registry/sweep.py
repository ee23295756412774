"""Hyperparameter sweeps: the trials of a grid, and the winner on validation NDCG@10 only.

The test split plays no part in choosing: the winner is the trial with the best
validation NDCG@10 (the first trial on a tie), and only the winner is evaluated. A trial
whose training fails is recorded with its cause and the others go on; the sweep fails only
when no trial trained.
"""

import json
from pathlib import Path
from typing import Any

from sasrec.config import parse_hparams
from sasrec.errors import SASRecError

SELECTION_KEY = "best_val_ndcg@10"  # training.json: the trial's best validation NDCG@10
TRIALS_FILE = "trials.json"  # in the winner's model directory: every trial's results
FAILED_TRIAL_FILE = "trial_failed.json"  # a trial's output when its training failed


def plan_trials(hparams: dict[str, Any], grid: Any) -> list[dict[str, Any]]:
    """One trial per override object of `grid`, applied over `hparams`; empty grid: one trial.

    Each trial is checked as a whole, so a wrong override fails before anything trains.

    Returns:
        [{"trial": 0, "hparams": {...}}, ...]

    Raises:
        SASRecError: when `grid` is not a list of objects, or a trial's hparams are invalid.
    """
    if not isinstance(grid, list) or not all(isinstance(o, dict) for o in grid):
        raise SASRecError(
            f"hparams_grid must be a list of hparams objects, e.g. "
            f'[{{"hidden_size": 64}}, {{"hidden_size": 128}}], got {json.dumps(grid)}'
        )
    trials = [hparams | override for override in grid] or [hparams]
    if len({json.dumps(trial.get("max_val_users")) for trial in trials}) > 1:
        raise SASRecError(
            "hparams_grid varies max_val_users: trials would be validated on different "
            "users and could not be compared; set max_val_users in hparams, for all trials"
        )
    for number, trial in enumerate(trials):
        try:
            parse_hparams(trial)
        except SASRecError as err:
            if not grid:
                raise  # the user's --hparams alone: its own message
            raise SASRecError(f"hparams_grid trial {number} ({json.dumps(trial)}): {err}") from err
    return [{"trial": number, "hparams": trial} for number, trial in enumerate(trials)]


def trials_table(training_infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per trial, in trial order: number, the hparams that differ between trials, results.

    A failed trial's row has no results and its one-line cause under "error".

    Args:
        training_infos: The training.json of each trial's model (any order), or the
            failure record (`FAILED_TRIAL_FILE`) of a trial that could not train.
    """
    infos = sorted(training_infos, key=lambda info: info.get("sweep_trial", 0))
    varying = sorted(
        name
        for name in infos[0]["hparams"]
        if len({json.dumps(info["hparams"].get(name)) for info in infos}) > 1
    )
    return [
        {
            "trial": info.get("sweep_trial", 0),
            "hparams": {name: info["hparams"].get(name) for name in varying},
            "val_ndcg@10": info.get(SELECTION_KEY),
            "val_hit@10": info.get("best_val_hit@10"),
            "best_epoch": info.get("best_epoch"),
            "mlflow_run_id": info.get("mlflow_run_id"),
            **({"error": info["error"]} if "error" in info else {}),
        }
        for info in infos
    ]


def trained(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of trials that trained (a failed trial has no validation result)."""
    return [row for row in table if "error" not in row]


def winner(table: list[dict[str, Any]]) -> dict[str, Any]:
    """The trained row with the best validation NDCG@10; the lowest trial number on a tie.

    Raises:
        SASRecError: when no trial trained, naming each trial's cause.
    """
    rows = trained(table)
    if not rows:
        causes = "; ".join(f"trial {row['trial']}: {row['error']}" for row in table)
        raise SASRecError(f"every trial of the sweep failed: {causes}")
    return max(rows, key=lambda row: (row["val_ndcg@10"], -row["trial"]))


def read_trials(model_dir: str | Path) -> list[dict[str, Any]] | None:
    """The trials table kept in a sweep winner's model directory, or None (no sweep)."""
    path = Path(model_dir) / TRIALS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
