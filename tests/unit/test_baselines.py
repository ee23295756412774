import itertools

import polars as pl
import torch

from sasrec.evaluation.baselines import PopularityScorer, TransitionScorer
from sasrec.evaluation.evaluate import beyond_accuracy, breakdowns
from sasrec.scoring import item_popularity, rank_held_out

# Items 1..5. Item 2 is the most popular; 3 always follows 1, and 4 follows 2 twice.
TRAIN = pl.DataFrame(
    {"user_id": ["a", "b", "c"], "item_sequence": [[1, 3, 2], [2, 4], [1, 3, 2, 4, 2]]},
    schema={"user_id": pl.String, "item_sequence": pl.List(pl.Int32)},
)


def test_popularity_counts_training_items():
    assert item_popularity(TRAIN, 5).tolist() == [0, 2, 4, 2, 2, 0]


def test_transition_scores_by_hand():
    scorer = TransitionScorer(TRAIN, item_popularity(TRAIN, 5))
    scores = scorer(torch.tensor([[0, 0, 1], [0, 5, 2], [0, 0, 5]]))
    # After item 1: item 3 twice. After item 2: item 4 twice. Item 5 was never followed.
    assert scores[0].argmax() == 3 and scores[1].argmax() == 4
    assert torch.allclose(scores[0, 3] - scores[0, 3].floor(), scores[2, 3])
    assert scores[0, 3].floor() == 2
    # No transition from item 5: the popularity tie-break alone, under 1.
    assert scores[2].argmax() == 2 and scores[2].max() < 1


def test_baselines_ranked_by_the_evaluation_code():
    popularity = item_popularity(TRAIN, 5)
    held_out = pl.DataFrame(
        {"user_id": ["a", "b"], "history": [[1], [5, 2]], "target": [3, 4]},
        schema={"user_id": pl.String, "history": pl.List(pl.Int32), "target": pl.Int32},
    )
    transition = rank_held_out(TransitionScorer(TRAIN, popularity), held_out, 5, 50, num_sampled=0)
    assert transition.full.tolist() == [0, 0]  # 3 follows 1, 4 follows 2
    popular = rank_held_out(PopularityScorer(popularity), held_out, 5, 50, num_sampled=0)
    # User a: history {1} excluded; counts 2:4, 3:2, 4:2 -> 3 ties with 4, ties count against.
    # User b: history {5, 2} excluded; 1, 3, 4 all have 2 -> rank 2.
    assert popular.full.tolist() == [2, 2]
    assert popular.top_items[0, 0] == 2
    figures = beyond_accuracy(popular.top_items[:, :2], popularity, 5)
    assert figures["coverage@10"] == len(set(popular.top_items[:, :2].flatten().tolist())) / 5
    table = breakdowns(held_out, popularity, {"popularity": popular.full})
    by_length = table.filter(pl.col("breakdown") == "history_length")
    assert by_length["bucket"].to_list() == ["1-2"] and by_length["users"].to_list() == [2]


def test_transition_scores_equal_counts_of_every_pair_on_random_sequences():
    generator = torch.Generator().manual_seed(3)
    sequences = [
        torch.randint(1, 41, (int(n),), generator=generator).tolist()
        for n in torch.randint(1, 12, (300,), generator=generator)
    ]
    train = pl.DataFrame(
        {"user_id": [f"u{n}" for n in range(300)], "item_sequence": sequences},
        schema={"user_id": pl.String, "item_sequence": pl.List(pl.Int32)},
    )
    popularity = item_popularity(train, 40)
    expected = torch.zeros(41, 41)
    for sequence in sequences:
        for before, after in itertools.pairwise(sequence):
            expected[before, after] += 1
    last_items = torch.arange(41)  # every item as the last one, and padding (0) first
    histories = torch.stack([torch.zeros(41, dtype=torch.long), last_items], dim=1)
    scores = TransitionScorer(train, popularity)(histories)
    tie_break = popularity.float() / (popularity.max().float() + 1.0)
    assert torch.equal(scores, expected + tie_break)
