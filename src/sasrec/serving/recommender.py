"""Recommendations in original item ids, as `sasrec recommend --history` and the servers give them.

One `Recommender` answers the CLI, the MLflow pyfunc (`sasrec.serving.serving_model`, served by
`mlflow models serve` and by KServe's MLflow runtime, MLServer) and the serving benchmark,
so all of them answer alike. It needs only torch, numpy and pyarrow, which every MLflow
serving environment has: neither polars nor this package need be installed where a
registered model is served (the package travels with the model as its code).
"""

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from sasrec.filenames import (
    CONFIG_FILE,
    ITEM_TITLES_FILE,
    ITEM_VOCAB_FILE,
    POPULAR_FILE,
    WEIGHTS_FILE,
)
from sasrec.metrics import top_k
from sasrec.model import PAD, SASRec, exclude_items, load_sasrec, users_per_batch

DEFAULT_K = 10
HISTORY = "history"  # the request column: original item ids, oldest first


class BadRequest(ValueError):
    """A request the model cannot answer as asked; the servers turn it into a 4xx."""


class Recommender:
    """Top-k unseen items for histories of original item ids, scored in one forward pass."""

    def __init__(
        self, model_dir: str | Path, device: str | torch.device = "cpu", model: SASRec | None = None
    ) -> None:
        """Load `model_dir`; `model`, when given, is its model already loaded on `device`."""
        model_dir = Path(model_dir)
        self.device = torch.device(device)
        self.model = model or load_sasrec(
            model_dir / CONFIG_FILE, model_dir / WEIGHTS_FILE, self.device
        )
        vocab = pq.read_table(model_dir / ITEM_VOCAB_FILE).sort_by("item_index")
        self.item_ids = ["", *vocab["item_id"].to_pylist()]  # index -> id; 0 is padding
        self.index_of = {item: index for index, item in enumerate(self.item_ids) if index}
        self.titles = _read_titles(model_dir / ITEM_TITLES_FILE)
        popular = json.loads((model_dir / POPULAR_FILE).read_text())
        self.popular_items = popular["item_index"]
        self.popular_counts = popular["count"]

    @torch.inference_mode()
    def recommend(self, histories: Sequence[Sequence[str]], k: int = DEFAULT_K) -> list[dict]:
        """Per history: `item_ids` (best first, none of the history), `scores`, `unknown_ids`.

        Ids the model does not know are skipped and listed in `unknown_ids`; empty strings
        are padding and skipped silently. A history with no known id gets the most popular
        items, scored by their training counts (`source` says which). `titles` is there
        when the model has titles.
        """
        request_k(k)
        known = [[self.index_of[i] for i in history if i in self.index_of] for history in histories]
        unknown = [[i for i in history if i and i not in self.index_of] for history in histories]
        answers: list[dict[str, Any]] = [{} for _ in histories]
        readable = [row for row, items in enumerate(known) if items]
        if readable:
            indices, scores = self._top_unseen([known[row] for row in readable], k)
            for row, row_indices, row_scores in zip(readable, indices, scores, strict=True):
                finite = np.isfinite(row_scores)
                answers[row] = self._answer(row_indices[finite], row_scores[finite], "sasrec")
        for row, items in enumerate(known):
            if not items:
                top = slice(0, k)
                answers[row] = self._answer(
                    self.popular_items[top], self.popular_counts[top], "popularity"
                )
        for answer, ids in zip(answers, unknown, strict=True):
            answer["unknown_ids"] = ids
        return answers

    def _top_unseen(self, histories: list[list[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, k) item indices and scores, best first; -inf where fewer than k are unseen."""
        whole = torch.full((len(histories), max(map(len, histories))), PAD, dtype=torch.long)
        for row, items in enumerate(histories):
            whole[row, -len(items) :] = torch.tensor(items)
        k = min(k, self.model.config.num_items)
        indices, scores = top_unseen(self.model, whole, k, self.device)
        return indices.numpy(), scores.numpy()

    def _answer(self, indices: Sequence[int], scores: Sequence[float], source: str) -> dict:
        item_ids = [self.item_ids[int(index)] for index in indices]
        answer = {"item_ids": item_ids, "scores": [float(s) for s in scores], "source": source}
        if self.titles is not None:
            answer["titles"] = [self.titles.get(item) for item in item_ids]
        return answer


@torch.inference_mode()
def top_unseen(
    model: SASRec, histories: torch.Tensor, k: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best items per row that are not padding and not in the row's history.

    Args:
        model: A model in eval mode.
        histories: (B, S) item indices, left-padded; the last max_len feed the model.
        k: Items per row (at most the catalogue size).
        device: Where to score.

    Returns:
        (B, k) item indices and (B, k) scores, best first, on CPU.
    """
    top_values, top_indices = [], []
    for rows in histories.split(users_per_batch(len(histories), model.config.num_items)):
        rows = rows.to(device)
        scores = model(rows[:, -model.config.max_len :]).float()  # (b, N + 1)
        values, indices = top_k(exclude_items(scores, rows), k)
        top_values.append(values.cpu())
        top_indices.append(indices.cpu())
    return torch.cat(top_indices), torch.cat(top_values)


def _read_titles(titles_file: Path) -> dict[str, str] | None:
    """Titles by item id, or None when the model has no titles."""
    if not titles_file.is_file():
        return None
    table = pq.read_table(titles_file)
    return dict(zip(table["item_id"].to_pylist(), table["title"].to_pylist(), strict=True))


def request_k(k: Any) -> int:
    """`k` as a positive int, else BadRequest."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise BadRequest(f"k must be a whole number of at least 1, got {k!r}")
    return int(k)


def histories_from(rows: Any) -> list[list[str]]:
    """The `history` lists of a request, a pandas DataFrame as both servers hand it over.

    Each history is a list of item id strings; null is an empty history.

    Raises:
        BadRequest: without a `history` column, or for a history that is not a list of strings.
    """
    if HISTORY not in rows.columns:
        # MLflow drops the columns the model's signature does not name before the model sees
        # the request: a {"hist": ...} arrives with no column at all.
        got = f"got {list(rows.columns)}" if len(rows.columns) else "got none it knows"
        raise BadRequest(
            f"the request needs a {HISTORY!r} column (item ids, oldest first), {got}; e.g. "
            f'{{"dataframe_records": [{{"{HISTORY}": ["B0001", "B0002"]}}]}}'
        )
    return [_history(value, row) for row, value in enumerate(rows[HISTORY].tolist())]


def _history(value: Any, row: int) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise BadRequest(f"row {row}: {HISTORY} must be a list of item ids, got {value!r}")
    items = [item.decode() if isinstance(item, bytes) else item for item in value]
    if not all(isinstance(item, str) for item in items):
        raise BadRequest(f"row {row}: {HISTORY} must hold item id strings, got {value!r}")
    return items
