"""Scoring split into shards: merged, every metric and recommendation is one process's."""

from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import write_reviews_jsonl_gz
from sasrec.config import parse_hparams
from sasrec.data import schema
from sasrec.data.steps import download_step, sequences_step
from sasrec.errors import SASRecError
from sasrec.evaluation.evaluate import evaluate_model, score_shard
from sasrec.scoring import SAMPLING_BLOCK, shard_range
from sasrec.serving.recommend import RECOMMEND_BATCH, merge_recommendations, recommend_step
from sasrec.training.train import train_sasrec

NUM_USERS = 5_000  # 5 blocks of test users, 3 batches of recommendations


def varied_reviews(num_users: int = NUM_USERS, num_items: int = 300) -> list[dict]:
    """User u walks 3 + u % 9 items from u % num_items on: histories of many lengths."""
    return [
        {
            "rating": 5.0,
            "parent_asin": f"B{(user + step) % num_items:04d}",
            "user_id": f"U{user:05d}",
            "timestamp": 1_600_000_000_000 + step * 1000,
        }
        for user in range(num_users)
        for step in range(3 + user % 9)
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(model dir, sequences dir) of a briefly trained model over 5,000 users."""
    work = tmp_path_factory.mktemp("shards")
    source = write_reviews_jsonl_gz(work / "varied.jsonl.gz", varied_reviews())
    download_step(str(source), work / "raw", cache_dir=work / "cache")
    sequences_step(work / "raw" / "interactions.parquet", work / "seq", kcore=0)
    hparams = {"max_epochs": 1, "hidden_size": 16, "batch_size": 512, "max_val_users": 500}
    train_sasrec(work / "seq", work / "model", parse_hparams(hparams))
    return work / "model", work / "seq"


def evaluation_files(folder: Path) -> dict[str, bytes]:
    names = (schema.METRICS_FILE, schema.BREAKDOWNS_FILE, schema.REPORT_FILE)
    return {name: (folder / name).read_bytes() for name in names}


@pytest.mark.parametrize("shards", [3, 8])  # 8: more shards than blocks, some empty
def test_shards_merged_give_the_evaluation_of_one_process(trained, tmp_path, shards):
    model_dir, sequences_dir = trained
    assert pl.read_parquet(sequences_dir / schema.TEST_FILE).height > 4 * SAMPLING_BLOCK
    evaluate_model(model_dir, sequences_dir, tmp_path / "one")
    score_dirs = [tmp_path / f"shard{shard}" for shard in range(shards)]
    counts = [score_shard(model_dir, sequences_dir, d, shard, shards)
              for shard, d in enumerate(score_dirs)]  # fmt: skip
    assert sum(c["test_users"] for c in counts) == NUM_USERS
    assert max(c["test_users"] for c in counts) < NUM_USERS
    evaluate_model(model_dir, sequences_dir, tmp_path / "merged", score_dirs=score_dirs[::-1])
    assert evaluation_files(tmp_path / "merged") == evaluation_files(tmp_path / "one")


def test_a_missing_or_repeated_shard_is_refused_and_nothing_written(trained, tmp_path):
    model_dir, sequences_dir = trained
    score_dirs = [tmp_path / f"shard{shard}" for shard in range(3)]
    for shard, folder in enumerate(score_dirs):
        score_shard(model_dir, sequences_dir, folder, shard, 3)
    for given_dirs in (score_dirs[:2], [*score_dirs, score_dirs[1]]):
        with pytest.raises(SASRecError, match=r"the \d+ scoring shards hold .* test users"):
            evaluate_model(model_dir, sequences_dir, tmp_path / "out", score_dirs=given_dirs)
        assert not (tmp_path / "out").exists()


def test_shards_of_recommendations_joined_are_the_file_of_one_process(trained, tmp_path):
    model_dir, sequences_dir = trained
    recommend_step(model_dir, sequences_dir, tmp_path / "one", k=5)
    parts = [tmp_path / f"part{shard}" for shard in range(3)]
    users = [recommend_step(model_dir, sequences_dir, part, 5, shard, 3)["num_users"]
             for shard, part in enumerate(parts)]  # fmt: skip
    assert sum(users) == NUM_USERS and max(users) <= 2 * RECOMMEND_BATCH
    merge_recommendations(parts, tmp_path / "merged")
    one, merged = (
        pl.read_parquet(tmp_path / name / schema.RECOMMENDATIONS_FILE) for name in ("one", "merged")
    )
    assert one.height == NUM_USERS * 5
    assert merged.equals(one)  # the same rows in the same order, scores to the bit


@given(num_rows=st.integers(0, 10_000), block=st.integers(1, 3_000), shards=st.integers(1, 40))
def test_shards_are_whole_blocks_covering_every_row_once(num_rows, block, shards):
    ranges = [shard_range(num_rows, block, shard, shards) for shard in range(shards)]
    assert [row for r in ranges for row in r] == list(range(num_rows))
    assert all(r.start % block == 0 for r in ranges)
    sizes = [len(r) for r in ranges]
    assert max(sizes) - min(sizes) <= block * (1 + (num_rows % block > 0))


def test_fewer_than_one_scoring_shard_is_a_one_line_error():
    from sasrec.evaluation.step import scoring_shards

    assert scoring_shards(3) == [0, 1, 2]
    with pytest.raises(SASRecError, match=r"^scoring_shards must be at least 1, got 0$"):
        scoring_shards(0)
