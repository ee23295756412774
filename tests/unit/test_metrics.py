import math

import polars as pl
import pytest
import torch

import sasrec.model
from sasrec.data import schema
from sasrec.metrics import (
    RANK_CAP,
    chunk_maxima,
    hit_at_k,
    ndcg_at_k,
    rank_of_targets,
    ranking_metrics,
    top_k,
)
from sasrec.model import exclude_items
from sasrec.scoring import rank_held_out, sample_unseen_items


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
    target = torch.tensor([2])
    assert rank_of_targets(exclude_items(scores.clone(), history), target).item() == 0
    assert rank_of_targets(exclude_items(scores.clone(), torch.tensor([[0, 0]])), target) == 1


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
    assert rank_of_targets(exclude_items(scores.clone(), None), torch.tensor([2])).item() == 1


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


def awkward_scores(rows: int, columns: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Integer scores (many ties) with -inf, +inf and NaN sprinkled in."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(-3, 4, (rows, columns), generator=generator).to(dtype)
    for value, share in (("-inf", 0.05), ("inf", 0.002), ("nan", 0.01)):
        scores[torch.rand(scores.shape, generator=generator) < share] = float(value)
    scores[0] = float("nan")  # a row of NaN only
    scores[1, : columns // 2] = float("-inf")  # a row of many excluded items
    return scores


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("layout", ["users x items", "items x users"])
def test_rank_of_targets_equals_a_plain_count_with_ties_infinities_and_nans(dtype, layout):
    scores = awkward_scores(64, 3000, dtype)
    targets = torch.randint(0, 3000, (64,), generator=torch.Generator().manual_seed(1))
    targets[1] = 0  # an excluded (-inf) target
    targets[2] = int(scores[2].isinf().nonzero()[0])  # an infinite target
    expected = []
    for row, target in zip(scores.tolist(), targets.tolist(), strict=True):
        mine = row[target]
        above = sum(score >= mine for score in row)  # NaN compares false
        expected.append(len(row) - 1 if math.isnan(mine) else above - 1)
    # SASRec's CPU scores are an (items x users) product seen transposed.
    scored = scores if layout == "users x items" else scores.T.contiguous().T
    assert rank_of_targets(scored, targets).tolist() == expected


@pytest.mark.parametrize("layout", ["users x items", "items x users"])
@pytest.mark.parametrize(("columns", "cap"), [(25_601, RANK_CAP), (25_601, 1), (3_000, RANK_CAP)])
def test_capped_ranks_are_the_plain_ranks_cut_at_the_cap(layout, columns, cap):
    # Scores with many ties (two decimals), targets placed around the cap, and the rows
    # that the chunk maxima cannot settle: NaN chunks, a NaN or excluded target.
    generator = torch.Generator().manual_seed(columns + cap)
    scores = torch.randn(200, columns, generator=generator).mul(100).round().div(100)
    order = scores.argsort(dim=1, descending=True)
    places = torch.randint(0, 3 * cap + 3, (200,), generator=generator)
    targets = order.gather(1, places.unsqueeze(1)).squeeze(1)
    targets[100:] = torch.randint(0, columns, (100,), generator=generator)  # anywhere
    scores[3, ::50] = float("nan")  # a NaN in every chunk, the target near the top
    scores[4, 5] = float("nan")  # one NaN chunk
    scores[5, targets[5]] = float("nan")  # a NaN target ranks last
    scores[6, targets[6]] = float("-inf")  # an excluded target
    scores[7, :] = 0.0  # every score tied
    scored = scores if layout == "users x items" else scores.T.contiguous().T
    expected = rank_of_targets(scores, targets).clamp(max=cap)
    assert (expected < cap).sum() >= 5 and (expected == cap).sum() >= 100  # both sides
    assert torch.equal(rank_of_targets(scored, targets, cap), expected)
    if columns // 64 > cap:  # chunk maxima are used: given or computed, the same
        maxima = chunk_maxima(scored)
        assert torch.equal(rank_of_targets(scored, targets, cap, maxima), expected)


@pytest.mark.parametrize("layout", ["users x items", "items x users"])
@pytest.mark.parametrize(("columns", "k"), [(30, 10), (25_601, 10), (25_601, 1), (9_000, 50)])
def test_top_k_finds_the_values_of_a_full_topk_with_ties_and_nans(layout, columns, k):
    scores = awkward_scores(40, columns, torch.float32, seed=columns + k)
    scores[2] = torch.randn(columns, generator=torch.Generator().manual_seed(2))  # no ties
    scored = scores if layout == "users x items" else scores.T.contiguous().T
    values, indices = top_k(scored, k)
    expected = scores.topk(k, dim=1)
    assert torch.equal(values.nan_to_num(nan=7.0), expected.values.nan_to_num(nan=7.0))
    assert torch.equal(scores.gather(1, indices).nan_to_num(nan=7.0), values.nan_to_num(nan=7.0))
    assert all(len(set(row)) == k for row in indices.tolist())  # distinct items
    assert torch.equal(indices[2], expected.indices[2])  # without ties, the same items


def test_the_scoring_batch_size_changes_no_rank_top_item_or_sampled_negative(monkeypatch):
    # 2,500 users: three blocks of sampled negatives, scored 7, 256 or 1,024 at a time, or
    # 5 at a time where the catalogue is too large for more, or laid out items x users.
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

    def items_first_scorer(histories: torch.Tensor) -> torch.Tensor:  # as SASRec on CPU
        return (embeddings @ embeddings[histories].sum(1).T).T

    popularity = torch.arange(num_items + 1).double()
    results = [
        rank_held_out(scorer, held_out, num_items, 50, popularity, batch_size=size)
        for size in (7, 256, 1024)
    ]
    results.append(rank_held_out(items_first_scorer, held_out, num_items, 50, popularity))
    monkeypatch.setattr(sasrec.model, "MAX_SCORES", 5 * (num_items + 1))
    results.append(rank_held_out(scorer, held_out, num_items, 50, popularity, batch_size=1024))
    for other in results[1:]:
        for field in ("full", "sampled", "popsampled", "top_items"):
            assert torch.equal(getattr(results[0], field), getattr(other, field)), field
    assert not torch.equal(results[0].sampled, results[0].popsampled)  # two draws
