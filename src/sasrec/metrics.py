"""Ranking metrics from the 0-based rank of each user's held-out item."""

import torch


def ndcg_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user NDCG@k with one relevant item: 1/log2(rank + 2) inside the top k, else 0."""
    gains = 1.0 / torch.log2(ranks.double() + 2.0)
    return torch.where(ranks < k, gains, torch.zeros_like(gains))


def hit_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user HR@k: 1 when the held-out item is in the top k (= recall@k, one item)."""
    return (ranks < k).double()


def mrr_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user reciprocal rank cut at k: 1/(rank + 1) inside the top k, else 0."""
    reciprocal = 1.0 / (ranks.double() + 1.0)
    return torch.where(ranks < k, reciprocal, torch.zeros_like(reciprocal))


METRICS_AT_K = {"ndcg": ndcg_at_k, "hit": hit_at_k, "mrr": mrr_at_k}
KS = (1, 5, 10, 20, 50)


def ranking_metrics(
    ranks: torch.Tensor, ks: tuple[int, ...] = KS, prefix: str = ""
) -> dict[str, float]:
    """Mean NDCG@k, HR@k and MRR@k over users, as flat keys like `ndcg@10`, `mrr@10`."""
    return {
        f"{prefix}{name}@{k}": metric(ranks, k).mean().item()
        for k in ks
        for name, metric in METRICS_AT_K.items()
    }


def rank_of_targets(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among its row's scores; ties count against the target.

    Args:
        scores: (B, C) scores; excluded candidates hold -inf.
        targets: (B,) column index of each row's held-out item.

    Returns:
        (B,) int32 ranks in [0, C - 1].
    """
    target_scores = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
    # An int32 sum of the comparison is ~2x faster than the default int64 one on CPU.
    ranks = (scores >= target_scores).sum(1, dtype=torch.int32) - 1
    # A NaN target compares false with everything (rank -1, an NDCG of infinity): it ranks
    # last. Other NaN scores rank below the target, as items that are not recommended.
    return torch.where(target_scores.squeeze(1).isnan(), scores.shape[1] - 1, ranks)
