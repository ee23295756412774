"""Top-K recommendations in original item ids: for one history, or for every user."""

import logging
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from sasrec.data import schema
from sasrec.data.sequences import known_sequences
from sasrec.device import resolve_device
from sasrec.errors import SASRecError
from sasrec.inputs import read_sequences, require_same_catalogue
from sasrec.io import atomic_dir, require_output_dir
from sasrec.model_dir import load_model_dir
from sasrec.serving.recommender import Recommender, top_unseen
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


def recommend_for_history(
    model_dir: str | Path, history: list[str], k: int = 10, device: str = "auto"
) -> dict[str, Any]:
    """Top-k items after `history` (original item ids, oldest first), as the servers answer.

    Returns:
        `item_ids` (best first, none of the history), `scores`, `source`, `unknown_ids`,
        and `titles` when the model has them (see `sasrec.serving.recommender.Recommender`).

    Raises:
        SASRecError: for a model directory that does not load, or k that is not positive.
    """
    check_k(k)
    torch_device = resolve_device(device)
    model = load_model_dir(model_dir, torch_device)  # checks the folder, one-line errors
    answer = Recommender(model_dir, torch_device, model).recommend([history], k)[0]
    if answer["unknown_ids"]:
        log.warning("skipped %d item ids the model does not know: %s",
                    len(answer["unknown_ids"]), answer["unknown_ids"])  # fmt: skip
    if answer["source"] != "sasrec":
        log.warning("no item of the history is known to the model: the most popular items")
    return answer


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


def recommend_step(
    model_dir: str | Path, sequences_dir: str | Path, out_dir: str | Path, k: int = 10
) -> dict[str, int]:
    """Write every user's top-k unseen items to `out_dir/recommendations.parquet`."""
    from sasrec.serving.recommend import recommend_all_users

    return recommend_all_users(model_dir, sequences_dir, out_dir, k)
