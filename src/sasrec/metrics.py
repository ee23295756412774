"""Ranking metrics from the 0-based rank of each user's held-out item."""

import torch


def ndcg_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user NDCG@k with one relevant item: 1/log2(rank + 2) inside the top k, else 0."""
    gains = 1.0 / torch.log2(ranks.double() + 2.0)
    return torch.where(ranks < k, gains, torch.zeros_like(gains))


def hit_at_k(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """Per-user HR@k: 1 when the held-out item is in the top k."""
    return (ranks < k).double()


def ranking_metrics(
    ranks: torch.Tensor, ks: tuple[int, ...] = (10,), prefix: str = ""
) -> dict[str, float]:
    """Mean NDCG@k and HR@k over users, as flat keys like `ndcg@10`, `hit@10`."""
    metrics = {}
    for k in ks:
        metrics[f"{prefix}ndcg@{k}"] = ndcg_at_k(ranks, k).mean().item()
        metrics[f"{prefix}hit@{k}"] = hit_at_k(ranks, k).mean().item()
    return metrics


def rank_of_targets(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among its row's scores; ties count against the target.

    Args:
        scores: (B, C) scores; excluded candidates hold -inf.
        targets: (B,) column index of each row's held-out item.
    """
    target_scores = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
    return (scores >= target_scores).sum(1) - 1
