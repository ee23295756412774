"""Synthetic data for tests."""

import gzip
import json
from pathlib import Path


def write_reviews_jsonl_gz(path: Path, reviews: list[dict]) -> Path:
    """Write review dicts in the official one-object-per-line gzipped layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as out:
        for review in reviews:
            out.write(json.dumps(review) + "\n")
    return path


def cyclic_reviews(num_users: int = 80, num_items: int = 40, length: int = 8) -> list[dict]:
    """Reviews where every user walks the items in a cycle: a pattern SASRec can learn.

    User u starts at item u % num_items and reviews the next `length` items in order.
    """
    reviews = []
    for user in range(num_users):
        for step in range(length):
            item = (user + step) % num_items
            reviews.append({
                "rating": 5.0,
                "parent_asin": f"B{item:04d}",
                "asin": f"B{item:04d}",
                "user_id": f"U{user:03d}",
                "timestamp": 1_600_000_000_000 + step * 1000,
                "title": "t",
                "text": "x",
            })  # fmt: skip
    return reviews
