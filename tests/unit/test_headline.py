"""The headline: intervals beside the metrics, and warnings a user cannot miss."""

import json
import math
import statistics
import subprocess
import sys

import torch

from sasrec.evaluation.evaluate import headline_intervals
from sasrec.evaluation.headline import clear_losses, console_summary, warnings
from sasrec.metrics import confidence_half_width


def test_the_95_percent_interval_of_ndcg_and_hit_on_a_case_worked_by_hand():
    ranks = torch.tensor([0, 1, 20, 5, 9, 10])  # two outside the top 10
    ndcg = [1.0, 1 / math.log2(3), 0.0, 1 / math.log2(7), 1 / math.log2(11), 0.0]
    hits = [1, 1, 0, 1, 1, 0]
    intervals = headline_intervals(ranks)
    for key, values in (("ndcg@10_ci95", ndcg), ("hit@10_ci95", hits)):
        expected = 1.959964 * statistics.stdev(values) / math.sqrt(len(values))
        assert math.isclose(intervals[key], expected, rel_tol=1e-6), key
    assert math.isclose(intervals["hit@10_ci95"], 1.959964 * math.sqrt(4 / 15) / math.sqrt(6))
    assert confidence_half_width(torch.tensor([0.5])) == 0.0


def metrics(model: float, transition: float, popularity: float, users: int) -> dict:
    values = {"ndcg@10": model, "baseline_transition_ndcg@10": transition,
              "baseline_popularity_ndcg@10": popularity, "num_test_users": float(users),
              "ndcg@10_ci95": 0.031}  # fmt: skip
    for prefix in ("", "baseline_transition_", "baseline_popularity_"):
        values[f"{prefix}hit@10"] = 0.1
    return values


def test_a_model_that_loses_to_a_baseline_is_flagged_with_the_likely_cause():
    (losing,) = warnings(metrics(0.0180, 0.0120, 0.0480, users=50_000))
    assert losing.startswith("SASRec (NDCG@10 0.0180) does not beat the popularity 0.0480")
    assert "likely too little data or training" in losing
    assert warnings(metrics(0.0581, 0.0443, 0.0099, users=30_901)) == []


def test_a_small_test_set_is_called_small_with_its_interval():
    (small,) = warnings(metrics(0.30, 0.20, 0.10, users=90))
    assert small.startswith("only 90 test users (95% interval of NDCG@10: ±0.0310)")


def test_the_console_shows_each_metric_with_its_interval_and_the_warnings():
    summary = console_summary(metrics(0.0180, 0.0120, 0.0480, users=90), None, None, {})
    model_row = next(line for line in summary.splitlines() if line.startswith("SASRec"))
    assert "0.0180 ±0.0310" in model_row
    assert sum(line.startswith("warning: ") for line in summary.splitlines()) == 2


def test_clearly_beats_means_the_intervals_do_not_touch():
    wins = metrics(0.30, 0.20, 0.10, users=2_000) | {"baseline_transition_ndcg@10_ci95": 0.05}
    assert clear_losses(wins) == []  # 0.30 - 0.031 = 0.269 > 0.20 + 0.05
    close = wins | {"baseline_transition_ndcg@10_ci95": 0.07}  # 0.269 < 0.27
    assert clear_losses(close) == ["transition 0.2000"]
    assert clear_losses(metrics(0.05, 0.20, 0.10, users=2_000)) == [
        "transition 0.2000", "popularity 0.1000"
    ]  # fmt: skip


def test_the_smoke_check_exits_1_naming_the_baseline_it_does_not_beat(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics(0.21, 0.20, 0.10, users=2_000)))
    checked = subprocess.run(
        [sys.executable, "-m", "sasrec.evaluation.headline", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 1
    assert "does not clearly beat transition 0.2000" in checked.stderr
    path.write_text(json.dumps(metrics(0.30, 0.20, 0.10, users=2_000)))
    checked = subprocess.run(
        [sys.executable, "-m", "sasrec.evaluation.headline", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0 and "clearly beats both baselines" in checked.stdout


def test_the_smoke_check_of_a_missing_file_is_one_line(tmp_path):
    checked = subprocess.run(
        [sys.executable, "-m", "sasrec.evaluation.headline", str(tmp_path / "none.json")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 2 and "is not a file" in checked.stderr
    assert "Traceback" not in checked.stderr
