import math

import polars as pl
import pytest
import torch

from sasrec.data import schema
from sasrec.evaluate import full_catalogue_ranks, rank_held_out, sample_unseen_items
from sasrec.metrics import hit_at_k, ndcg_at_k, rank_of_targets, ranking_metrics


def test_perfect_ranking_gives_one_and_absent_item_zero():
    assert ndcg_at_k(torch.tensor([0]), 10).item() == 1.0
    assert hit_at_k(torch.tensor([0]), 10).item() == 1.0
    assert ndcg_at_k(torch.tensor([10]), 10).item() == 0.0
    assert hit_at_k(torch.tensor([10]), 10).item() == 0.0


def test_ndcg_by_hand():
    # rank 1 (second place): 1/log2(3); rank 3: 1/log2(5); mean over the two users.
    metrics = ranking_metrics(torch.tensor([1, 3]), ks=(2, 10))
    assert math.isclose(metrics["ndcg@10"], (1 / math.log2(3) + 1 / math.log2(5)) / 2)
    assert math.isclose(metrics["ndcg@2"], (1 / math.log2(3)) / 2)
    assert metrics["hit@2"] == 0.5 and metrics["hit@10"] == 1.0


def test_rank_counts_ties_against_the_target():
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.1], [0.1, 0.2, 0.3, 0.4]])
    assert rank_of_targets(scores, torch.tensor([0, 3])).tolist() == [2, 0]
    constant = torch.zeros(1, 100)
    assert rank_of_targets(constant, torch.tensor([5])).item() == 99


def test_full_catalogue_ranking_excludes_history_and_padding():
    # Items 1..5; item 4 scores highest but is in the history, so target 2 ranks first.
    scores = torch.tensor([[9.0, 1.0, 3.0, 0.0, 5.0, 2.0]])
    history = torch.tensor([[0, 4]])
    assert full_catalogue_ranks(scores.clone(), history, torch.tensor([2])).item() == 0
    assert (
        full_catalogue_ranks(scores.clone(), torch.tensor([[0, 0]]), torch.tensor([2])).item() == 1
    )


def test_sampled_negatives_are_unseen_and_reproducible():
    seen = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8]])
    first = sample_unseen_items(seen, 10, 500, torch.Generator().manual_seed(3))
    second = sample_unseen_items(seen, 10, 500, torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    assert set(first[0].tolist()) == {4, 5, 6, 7, 8, 9, 10}
    assert set(first[1].tolist()) == {1, 2, 3, 4, 9, 10}


def test_metrics_match_ir_measures_on_random_rankings():
    # An independent implementation (trec_eval through ir-measures) on random cases.
    import ir_measures
    from ir_measures import RR, R, nDCG

    generator = torch.Generator().manual_seed(7)
    num_users, num_items = 60, 40
    scores = torch.rand(num_users, num_items, generator=generator)  # no ties
    targets = torch.randint(0, num_items, (num_users,), generator=generator)
    qrels = [ir_measures.Qrel(str(u), str(int(targets[u])), 1) for u in range(num_users)]
    run = [
        ir_measures.ScoredDoc(str(u), str(i), float(scores[u, i]))
        for u in range(num_users)
        for i in range(num_items)
    ]
    ours = ranking_metrics(rank_of_targets(scores, targets))
    for k in (1, 5, 10, 20):
        theirs = ir_measures.calc_aggregate([nDCG @ k, RR @ k, R @ k], qrels, run)
        assert math.isclose(ours[f"ndcg@{k}"], theirs[nDCG @ k], abs_tol=1e-9)
        assert math.isclose(ours[f"mrr@{k}"], theirs[RR @ k], abs_tol=1e-9)
        assert math.isclose(ours[f"hit@{k}"], theirs[R @ k], abs_tol=1e-9)


def test_mrr_by_hand_and_the_default_cutoffs():
    metrics = ranking_metrics(torch.tensor([0, 2, 60]))
    assert math.isclose(metrics["mrr@10"], (1 + 1 / 3 + 0) / 3)
    assert math.isclose(metrics["mrr@1"], 1 / 3)
    assert {f"{m}@{k}" for m in ("ndcg", "hit", "mrr") for k in (1, 5, 10, 20, 50)} == set(metrics)


def test_history_can_be_kept_in_the_ranking():
    scores = torch.tensor([[9.0, 1.0, 3.0, 0.0, 5.0, 2.0]])
    assert full_catalogue_ranks(scores.clone(), None, torch.tensor([2])).item() == 1


def test_popularity_sampled_negatives_follow_the_weights_and_skip_seen_items():
    seen = torch.tensor([[0, 1]])
    weights = torch.tensor([0.0, 100.0, 1.0, 1.0, 50.0, 1.0])  # item 1 popular but seen
    samples = sample_unseen_items(seen, 5, 4000, torch.Generator().manual_seed(1), weights)
    counts = torch.bincount(samples.flatten(), minlength=6)
    assert counts[0] == 0 and counts[1] == 0
    # Item 4 carries 50 of the 53 unseen weight units.
    assert 0.9 < counts[4] / 4000 < 0.98
    again = sample_unseen_items(seen, 5, 4000, torch.Generator().manual_seed(1), weights)
    assert torch.equal(samples, again)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_rank_of_targets_equals_a_plain_count_with_ties_infinities_and_nans(dtype):
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(-3, 4, (64, 3000), generator=generator).to(dtype)  # many ties
    scores[torch.rand(scores.shape, generator=generator) < 0.05] = float("-inf")
    scores[torch.rand(scores.shape, generator=generator) < 0.01] = float("nan")
    targets = torch.randint(0, 3000, (64,), generator=generator)
    expected = []
    for row, target in zip(scores.tolist(), targets.tolist(), strict=True):
        mine = row[target]
        above = sum(score >= mine for score in row)  # NaN compares false
        expected.append(len(row) - 1 if math.isnan(mine) else above - 1)
    assert rank_of_targets(scores, targets).tolist() == expected


def test_the_scoring_batch_size_changes_no_rank_top_item_or_sampled_negative():
    # 2,500 users: three blocks of sampled negatives, scored 7, 256 or 1,024 at a time.
    num_items, generator = 60, torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 9, (2500,), generator=generator).tolist()
    held_out = pl.DataFrame(
        {
            "user_id": [f"u{n}" for n in range(2500)],
            "history": [
                torch.randperm(num_items, generator=generator)[:n].add(1).tolist() for n in lengths
            ],
            "target": torch.randint(1, num_items + 1, (2500,), generator=generator).tolist(),
        },
        schema=schema.HELD_OUT_SCHEMA,
    )
    embeddings = torch.randn(num_items + 1, 8, generator=generator)

    def scorer(histories: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, N + 1)
        return embeddings[histories].sum(1) @ embeddings.T

    popularity = torch.arange(num_items + 1).double()
    results = [
        rank_held_out(scorer, held_out, num_items, 50, popularity, batch_size=size)
        for size in (7, 256, 1024)
    ]
    for other in results[1:]:
        for field in ("full", "sampled", "popsampled", "top_items"):
            assert torch.equal(getattr(results[0], field), getattr(other, field)), field
    assert not torch.equal(results[0].sampled, results[0].popsampled)  # two draws
