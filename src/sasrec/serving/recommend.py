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
from sasrec.inputs import SequenceFiles, read_sequences, require_same_catalogue
from sasrec.io import atomic_dir, require_complete, require_output_dir
from sasrec.model import SASRec
from sasrec.model_dir import load_model_dir
from sasrec.scoring import shard_range
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
    shard: tuple[int, int] = (0, 1),
) -> dict[str, int]:
    """Write the top-k unseen items of every user to `out_dir/recommendations.parquet`.

    Every user of the sequences folder gets them: the history is the user's whole known
    sequence (training, validation and test items), and none of its items is recommended.
    The folder appears complete or not at all. With `shard` (shard, shards), only that
    shard's users: `merge_recommendations` joins the shards into the file of one process.

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
    with atomic_dir(out_dir, schema.RECOMMEND_STEP) as tmp:
        summary = write_recommendations(
            model, files, tmp / schema.RECOMMENDATIONS_FILE, k, torch_device, shard
        )
    log.info("wrote %d recommendations for %d users to %s",
             summary["num_rows"], summary["num_users"], out_dir)  # fmt: skip
    return summary


RECOMMEND_BATCH = 2048  # users scored at once


def write_recommendations(
    model: SASRec,
    files: SequenceFiles,
    path: Path,
    k: int,
    device: torch.device,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, int]:
    """Write the top-k unseen items of every user (or of a shard of them) to `path`.

    Users with the same whole history get the same items, so each distinct history is
    scored once: in a 0-core catalogue most users have one review, and 2.8M users of
    Video_Games hold far fewer distinct histories. Histories are scored in batches of
    similar length, streamed to the file so memory stays bounded; the users of a history
    follow one another. A shard (shard, shards) is a run of whole batches in that order,
    so the shards' files, one after the other, are the file of one process.

    Returns:
        Counts of users and rows written.
    """
    sequences = known_sequences(files.train, files.valid, files.test)
    histories = (
        sequences.group_by(schema.HISTORY, maintain_order=True)
        .agg(pl.col(schema.USER_ID))
        .sort(pl.col(schema.HISTORY).list.len(), maintain_order=True)
    )  # (history, user_id: the list of its users), one row per distinct history
    mine = shard_range(histories.height, RECOMMEND_BATCH, *shard)
    histories = histories[mine.start : mine.stop]
    item_ids = pa.array(["", *files.item_vocab[schema.ITEM_ID].to_list()])  # 0: padding
    k = min(k, model.config.num_items)
    rows = 0
    num_users = histories[schema.USER_ID].list.len().sum()
    with pq.ParquetWriter(path, RECOMMENDATIONS_SCHEMA) as writer:
        progress = tqdm(total=num_users, desc="recommend", unit="user")
        for batch in histories.iter_slices(RECOMMEND_BATCH):
            items, scores = top_unseen(model, pad_left(batch[schema.HISTORY]), k, device)
            counts = batch[schema.USER_ID].list.len().to_numpy().astype("int64")
            history_of_user = torch.arange(len(batch)).repeat_interleave(torch.from_numpy(counts))
            table = _recommendation_rows(
                batch[schema.USER_ID].explode().to_arrow(),
                items[history_of_user],
                scores[history_of_user],
                item_ids,
            )
            writer.write_table(table)
            rows += table.num_rows
            progress.update(len(history_of_user))
        progress.close()
    return {"num_users": num_users, "num_rows": rows, "k": k}


def _recommendation_rows(
    user_ids: pa.Array, items: torch.Tensor, scores: torch.Tensor, item_ids: pa.Array
) -> pa.Table:
    """(user_id, rank, item_id, score) rows of (U,) users' (U, k) best items and scores."""
    num_users, k = items.shape
    # Users with fewer than k unseen items get -inf fillers: drop them.
    keep = torch.isfinite(scores).flatten().numpy()
    return pa.table(
        {
            "user_id": user_ids.take(
                pa.array(torch.arange(num_users).repeat_interleave(k).numpy())
            ),
            "rank": pa.array(torch.arange(1, k + 1, dtype=torch.int32).repeat(num_users).numpy()),
            "item_id": item_ids.take(pa.array(items.flatten().numpy())),
            "score": pa.array(scores.flatten().numpy()),
        },
        schema=RECOMMENDATIONS_SCHEMA,
    ).filter(pa.array(keep))


def merge_recommendations(shard_dirs: list[str | Path], out_dir: str | Path) -> dict[str, int]:
    """Join the shards' recommendations, in shard order, into `out_dir/recommendations.parquet`.

    Streamed a batch at a time: memory holds one batch, not the file.

    Raises:
        SASRecError: for a folder that is not a whole output of `recommend_all_users`.
    """
    require_output_dir(out_dir, schema.RECOMMEND_STEP)
    parts = [
        require_complete(d, schema.RECOMMEND_STEP) / schema.RECOMMENDATIONS_FILE for d in shard_dirs
    ]
    rows = 0
    with (
        atomic_dir(out_dir, schema.RECOMMEND_STEP) as tmp,
        pq.ParquetWriter(tmp / schema.RECOMMENDATIONS_FILE, RECOMMENDATIONS_SCHEMA) as writer,
    ):
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches():
                writer.write_batch(batch)
                rows += batch.num_rows
    log.info("merged %d recommendations of %d shards into %s", rows, len(parts), out_dir)
    return {"num_rows": rows, "shards": len(parts)}


def recommend_step(
    model_dir: str | Path,
    sequences_dir: str | Path,
    out_dir: str | Path,
    k: int = 10,
    shard: int = 0,
    shards: int = 1,
) -> dict[str, int]:
    """Write every user's (or a shard's users') top-k unseen items to recommendations.parquet."""
    return recommend_all_users(model_dir, sequences_dir, out_dir, k, shard=(shard, shards))
