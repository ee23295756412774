"""The synthetic reviews of `make smoke`: an order a model can learn, at the share asked for."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "synthetic_reviews.py"
spec = importlib.util.spec_from_file_location("synthetic_reviews", BENCH)
synthetic_reviews = importlib.util.module_from_spec(spec)
spec.loader.exec_module(synthetic_reviews)


def series_steps(follow: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(steps between a user's consecutive items in series order, whether each is on-series).

    A step is measured on the series permutation the generator draws first (same seed).
    """
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 300, 20_000)
    timestamps = rng.permutation(20_000)  # distinct: the order is unambiguous
    num_items = 400
    items = synthetic_reviews.series_items(
        np.random.default_rng(seed + 1), users, timestamps, num_items, follow
    )
    series_of = np.random.default_rng(seed + 1).permutation(num_items)  # the generator's first draw
    place = np.argsort(series_of)[items]  # each item's index in series order
    order = np.lexsort((timestamps, users))
    same_user = users[order][1:] == users[order][:-1]
    before, after = place[order][:-1][same_user], place[order][1:][same_user]
    length = synthetic_reviews.SERIES_LENGTH
    steps = (after - before) % length
    return steps, (before // length == after // length) & (steps >= 1) & (steps <= 3)


def test_with_follow_1_every_next_item_is_one_to_three_steps_on_in_the_same_series():
    _, on_series = series_steps(1.0)
    assert on_series.all()


@pytest.mark.parametrize("follow", [0.0, 0.5])
def test_the_share_of_series_steps_follows_the_probability(follow):
    _, on_series = series_steps(follow)
    # Both items on-series: follow^2, plus the rare popular draw that lands right.
    assert on_series.mean() == pytest.approx(follow**2, abs=0.03)
