"""Top-K recommendations in original item ids: for one history, or for every user."""

import logging
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from sasrec.checkpoint import load_model_dir
from sasrec.data import schema
from sasrec.data.sequences import known_sequences
from sasrec.device import resolve_device
from sasrec.errors import SASRecError
from sasrec.evaluate import exclude_items
from sasrec.inputs import read_item_vocab, read_sequences, require_same_catalogue
from sasrec.io import atomic_dir, require_output_dir
from sasrec.model import SASRec
from sasrec.tensors import pad_left

log = logging.getLogger(__name__)

RECOMMENDATIONS_SCHEMA = pa.schema([
    pa.field("user_id", pa.string()),
    pa.field("rank", pa.int32()),  # 1 = best
    pa.field("item_id", pa.string()),
    pa.field("score", pa.float32()),
])  # fmt: skip


def check_k(k: int) -> None:
    """Reject a non-positive number of recommendations."""
    if k < 1:
        raise SASRecError(f"-k must be at least 1, got {k}")


@torch.no_grad()
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
    histories = histories.to(device)
    scores = model(histories[:, -model.config.max_len :]).float()  # (B, N + 1)
    top = exclude_items(scores, histories).topk(k, dim=1)
    return top.indices.cpu(), top.values.cpu()


def recommend_for_history(
    model_dir: str | Path, history: list[str], k: int = 10, device: str = "auto"
) -> list[dict[str, Any]]:
    """Top-k items after `history` (original item ids, oldest first).

    Ids the model does not know are skipped with a warning.

    Raises:
        SASRecError: when no id of `history` is known, or k is not positive.
    """
    check_k(k)
    torch_device = resolve_device(device)
    model = load_model_dir(model_dir, torch_device)
    vocab = read_item_vocab(Path(model_dir) / schema.ITEM_VOCAB_FILE, "a model directory")
    index_of = dict(zip(vocab[schema.ITEM_ID], vocab[schema.ITEM_INDEX], strict=True))
    unknown = [item for item in history if item not in index_of]
    known = [index_of[item] for item in history if item in index_of]
    if not known:
        raise SASRecError(
            f"none of the history items {history} is in the model's catalogue of "
            f"{len(index_of)} items (e.g. {vocab[schema.ITEM_ID][0]!r}); give parent_asin ids"
        )
    if unknown:
        log.warning("skipping %d item ids the model does not know: %s", len(unknown), unknown)
    items, scores = top_unseen(
        model, torch.tensor([known]), min(k, model.config.num_items - len(set(known))), torch_device
    )
    item_ids = vocab.sort(schema.ITEM_INDEX)[schema.ITEM_ID].to_list()
    titles_path = Path(model_dir) / schema.ITEM_TITLES_FILE
    titles = dict(pl.read_parquet(titles_path).rows()) if titles_path.is_file() else {}
    ranked = zip(items[0].tolist(), scores[0].tolist(), strict=True)
    return [
        {"rank": rank, "item_id": item_ids[index - 1], "score": score}
        | ({"title": titles.get(item_ids[index - 1])} if titles else {})
        for rank, (index, score) in enumerate(ranked, start=1)
    ]


def recommend_all_users(
    model_dir: str | Path,
    sequences_dir: str | Path,
    out_dir: str | Path,
    k: int = 10,
    device: str = "auto",
    batch_size: int = 2048,
) -> dict[str, int]:
    """Write the top-k unseen items of every user to `out_dir/recommendations.parquet`.

    Every user of the sequences folder gets them: the history is the user's whole known
    sequence (training, validation and test items), and none of its items is recommended.
    Users are scored in batches of similar history length, streamed to the file so memory
    stays bounded; the folder appears complete or not at all.

    Returns:
        Counts of users and rows written.

    Raises:
        SASRecError: for a wrong input or output folder (nothing is written), or a model
            of another catalogue than the sequences.
    """
    check_k(k)
    require_output_dir(out_dir, schema.RECOMMEND_STEP)
    files = read_sequences(sequences_dir)
    torch_device = resolve_device(device)
    model = load_model_dir(model_dir, torch_device)
    require_same_catalogue(model_dir, files)
    sequences = known_sequences(files.train, files.valid, files.test)
    sequences = sequences.sort(pl.col(schema.HISTORY).list.len())
    item_ids = pa.array(["", *files.item_vocab[schema.ITEM_ID].to_list()])  # 0: padding
    k = min(k, model.config.num_items)
    rows = 0
    with (
        atomic_dir(out_dir, schema.RECOMMEND_STEP) as tmp,
        pq.ParquetWriter(tmp / schema.RECOMMENDATIONS_FILE, RECOMMENDATIONS_SCHEMA) as writer,
    ):
        progress = tqdm(total=sequences.height, desc="recommend", unit="user")
        for batch in sequences.iter_slices(batch_size):
            items, scores = top_unseen(model, pad_left(batch[schema.HISTORY]), k, torch_device)
            # Users with fewer than k unseen items get -inf fillers: drop them.
            keep = torch.isfinite(scores).flatten().numpy()
            table = pa.table(
                {
                    "user_id": batch[schema.USER_ID]
                    .to_arrow()
                    .take(pa.array(torch.arange(len(batch)).repeat_interleave(k).numpy())),
                    "rank": pa.array(
                        torch.arange(1, k + 1, dtype=torch.int32).repeat(len(batch)).numpy()
                    ),
                    "item_id": item_ids.take(pa.array(items.flatten().numpy())),
                    "score": pa.array(scores.flatten().numpy()),
                },
                schema=RECOMMENDATIONS_SCHEMA,
            ).filter(pa.array(keep))
            writer.write_table(table)
            rows += table.num_rows
            progress.update(len(batch))
        progress.close()
    log.info("wrote %d recommendations for %d users to %s", rows, sequences.height, out_dir)
    return {"num_users": sequences.height, "num_rows": rows, "k": k}
