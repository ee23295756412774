"""Scoring split into shards: merged, every metric and recommendation is one process's."""

from pathlib import Path

import polars as pl
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from helpers import write_reviews_jsonl_gz
from sasrec.config import parse_hparams
from sasrec.data import schema
from sasrec.data.steps import download_step, sequences_step
from sasrec.errors import SASRecError
from sasrec.evaluation.evaluate import evaluate_model, score_shard
from sasrec.model_dir import load_model_dir
from sasrec.scoring import SAMPLING_BLOCK, shard_range
from sasrec.serving.recommend import RECOMMEND_BATCH, merge_recommendations, recommend_step
from sasrec.serving.recommender import top_unseen
from sasrec.training.train import train_sasrec

NUM_USERS = 5_000  # 5 blocks of test users, 3 batches of recommendations


def varied_reviews(num_users: int = NUM_USERS, num_items: int = 1_000) -> list[dict]:
    """User u walks 3 + u % 9 items from u % num_items on: histories of many lengths.

    Every history is distinct (9,000 users before one repeats), so that recommendation
    batches, which hold distinct histories, are batches of users.
    """
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


TWINNED = [f"U{user:05d}" for user in range(50)]


def test_users_sharing_a_history_get_the_items_of_that_history_scored_alone(trained, tmp_path):
    # 50 twins: new users with the whole history of an existing one. Distinct histories
    # are scored once, so a twin's rows must be its original's; and a history scored in a
    # batch of others must get what it gets scored alone.
    model_dir, sequences_dir = trained
    twins_dir = tmp_path / "twins"
    twins_dir.mkdir()
    for source in sequences_dir.iterdir():
        frame_file = source.name in (schema.TRAIN_FILE, schema.VALID_FILE, schema.TEST_FILE)
        if not frame_file:
            (twins_dir / source.name).write_bytes(source.read_bytes())
            continue
        frame = pl.read_parquet(source)
        twins = frame.filter(pl.col(schema.USER_ID).is_in(TWINNED)).with_columns(
            pl.col(schema.USER_ID) + "-twin"
        )
        pl.concat([frame, twins]).write_parquet(twins_dir / source.name)
    summary = recommend_step(model_dir, twins_dir, tmp_path / "recs", k=5)
    assert summary["num_users"] == NUM_USERS + 50
    recs = pl.read_parquet(tmp_path / "recs" / schema.RECOMMENDATIONS_FILE)
    originals = recs.filter(pl.col(schema.USER_ID).is_in(TWINNED)).sort(schema.USER_ID, "rank")
    twins = recs.filter(pl.col(schema.USER_ID).str.ends_with("-twin")).sort(schema.USER_ID, "rank")
    assert originals.height == twins.height == 250
    assert twins.drop(schema.USER_ID).equals(originals.drop(schema.USER_ID))
    model = load_model_dir(model_dir, torch.device("cpu"))
    test = pl.read_parquet(sequences_dir / schema.TEST_FILE)
    item_ids = ["", *pl.read_parquet(sequences_dir / schema.ITEM_VOCAB_FILE)[schema.ITEM_ID]]
    for user, history, target in test.head(20).iter_rows():
        alone = torch.tensor([[*history, target]])  # the whole known sequence, one row
        items, scores = top_unseen(model, alone, 5, torch.device("cpu"))
        mine = originals.filter(pl.col(schema.USER_ID) == user)
        assert mine[schema.ITEM_ID].to_list() == [item_ids[i] for i in items[0].tolist()]
        assert torch.allclose(torch.tensor(mine["score"].to_list()), scores[0], atol=1e-5)


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
