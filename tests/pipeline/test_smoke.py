"""`make smoke` as a new user runs it: data with an order to learn, a model that learns it."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.long
def test_make_smoke_ends_with_the_model_clearly_above_both_baselines(tmp_path):
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    out = tmp_path / "smoke"
    done = subprocess.run(
        ["make", "-s", "smoke", f"SMOKE_DIR={tmp_path / 'data'}", f"SMOKE_OUT={out}"],
        cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "clearly beats both baselines" in done.stdout
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    model_low = metrics["ndcg@10"] - metrics["ndcg@10_ci95"]
    for baseline in ("transition", "popularity"):
        prefix = f"baseline_{baseline}_"
        assert model_low > metrics[f"{prefix}ndcg@10"] + metrics[f"{prefix}ndcg@10_ci95"]
        assert metrics["hit@10"] > metrics[f"{prefix}hit@10"]
    assert metrics["num_test_users"] >= 1_000  # enough users for the intervals to mean it
    assert "warning:" not in done.stdout
