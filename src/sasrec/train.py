"""The train step: fit SASRec on the training sequences, early-stopped on validation NDCG@10."""

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import torch
from tqdm.auto import tqdm

from sasrec.checkpoint import save_model_dir
from sasrec.config import HParams
from sasrec.data import schema
from sasrec.device import resolve_device
from sasrec.errors import SASRecError
from sasrec.evaluate import rank_held_out
from sasrec.io import read_json
from sasrec.metrics import ranking_metrics
from sasrec.model import PAD, SASRec, SASRecConfig
from sasrec.tensors import length_bucketed_batches, pad_left

log = logging.getLogger(__name__)

MetricsCallback = Callable[[dict[str, float], int], None]
SELECTION_METRIC = "val_ndcg@10"


def _no_logging(metrics: dict[str, float], epoch: int) -> None:
    del metrics, epoch


def train_epoch(
    model: SASRec,
    optimizer: torch.optim.Optimizer,
    sequences: torch.Tensor,
    lengths: torch.Tensor,
    hparams: HParams,
    generator: torch.Generator,
) -> float:
    """One pass over the training sequences; returns the mean loss.

    Args:
        model: The model, in train mode.
        optimizer: Its optimizer.
        sequences: (U, max_len + 1) left-padded item sequences, on the model's device.
        lengths: (U,) non-padding items per row (at least 2), on CPU.
        hparams: Batch size and negatives.
        generator: CPU generator for batch order and negative samples.
    """
    num_items = model.config.num_items
    total_loss, num_batches = 0.0, 0
    for rows in length_bucketed_batches(lengths, hparams.batch_size, generator):
        width = int(lengths[rows].max())
        batch = sequences[rows.to(sequences.device), -width:]  # (B, W) trimmed to the longest
        inputs, positives = batch[:, :-1], batch[:, 1:]
        negatives = torch.randint(
            1, num_items + 1, (*positives.shape, hparams.num_negatives), generator=generator
        ).to(sequences.device)  # (B, W - 1, N); a clash with a positive has odds 1/num_items
        loss = model(inputs, positives, negatives)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
        num_batches += 1
    return total_loss / max(num_batches, 1)


def training_tensors(train: pl.DataFrame, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, max_len + 1) padded sequences of users with at least 2 items, and their lengths."""
    usable = train.filter(pl.col(schema.ITEM_SEQUENCE).list.len() >= 2)
    sequences = pad_left(usable[schema.ITEM_SEQUENCE], max_len + 1)
    return sequences, (sequences != PAD).sum(1)


def validate(model: SASRec, valid: pl.DataFrame) -> dict[str, float]:
    """Full-catalogue validation metrics (`val_ndcg@10`, `val_hit@10`)."""
    ranks, _ = rank_held_out(model.eval(), valid, num_sampled=0)
    return ranking_metrics(ranks, prefix="val_")


@dataclass
class BestSoFar:
    """Early-stopping state: the best validation result and the weights that gave it."""

    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    evals_without_gain: int = 0

    def update(self, model: SASRec, metrics: dict[str, float], epoch: int) -> None:
        """Keep `model`'s weights when `metrics` has a better validation NDCG@10."""
        if metrics[SELECTION_METRIC] > self.metrics.get(SELECTION_METRIC, -1.0):
            self.epoch, self.metrics = epoch, metrics
            self.state = copy.deepcopy(model.state_dict())
            self.evals_without_gain = 0
        else:
            self.evals_without_gain += 1


def fit(
    model: SASRec,
    train: pl.DataFrame,
    valid: pl.DataFrame,
    hparams: HParams,
    log_metrics: MetricsCallback = _no_logging,
) -> dict[str, Any]:
    """Train with Adam, validating every `eval_every` epochs; ends with the best weights.

    Returns:
        Summary: best epoch, best validation metrics, epochs run, seconds.
    """
    device = next(model.parameters()).device
    sequences, lengths = training_tensors(train, hparams.max_len)
    if len(sequences) == 0:
        raise SASRecError("no training sequence has 2 items: nothing to learn from")
    sequences = sequences.to(device)
    generator = torch.Generator().manual_seed(hparams.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=hparams.lr, betas=(0.9, 0.98), fused=True)
    if 0 < hparams.max_val_users < valid.height:
        valid = valid.sample(hparams.max_val_users, seed=hparams.seed)
    best, start, epoch = BestSoFar(), time.perf_counter(), 0
    progress = tqdm(range(1, hparams.max_epochs + 1), desc="train", unit="epoch")
    for epoch in progress:
        epoch_start = time.perf_counter()
        loss = train_epoch(model.train(), optimizer, sequences, lengths, hparams, generator)
        if not math.isfinite(loss):
            raise SASRecError(f"training loss became {loss} at epoch {epoch}; lower lr")
        metrics = {"train_loss": loss, "epoch_seconds": time.perf_counter() - epoch_start}
        if epoch % hparams.eval_every == 0 or epoch == hparams.max_epochs:
            metrics |= validate(model, valid)
            best.update(model, metrics, epoch)
        log_metrics(metrics, epoch)
        progress.set_postfix(loss=f"{loss:.4f}", best_val_ndcg=best.metrics.get(SELECTION_METRIC))
        if best.evals_without_gain >= hparams.patience:
            log.info("early stop at epoch %d: best epoch %d", epoch, best.epoch)
            break
    model.load_state_dict(best.state)
    return {
        "best_epoch": best.epoch,
        **{f"best_{k}": v for k, v in best.metrics.items() if k.startswith("val_")},
        "epochs_run": epoch,
        "train_seconds": time.perf_counter() - start,
    }


def train_sasrec(
    sequences_dir: str | Path,
    model_dir: str | Path,
    hparams: HParams,
    lineage: dict[str, Any] | None = None,
    log_metrics: MetricsCallback = _no_logging,
) -> dict[str, Any]:
    """Train SASRec on a sequences directory and write the model artifact directory.

    Args:
        sequences_dir: Output of the sequences step.
        model_dir: The model artifact directory to write.
        hparams: Hyperparameters.
        lineage: Extra facts stored in training.json (e.g. the MLflow run id).
        log_metrics: Called with each epoch's metrics and the epoch number.

    Returns:
        The training summary, also stored in training.json.
    """
    sequences_dir = Path(sequences_dir)
    torch.manual_seed(hparams.seed)
    stats = read_json(sequences_dir / schema.STATS_FILE)
    config = SASRecConfig(
        num_items=stats["num_items"],
        max_len=hparams.max_len,
        hidden_size=hparams.hidden_size,
        num_blocks=hparams.num_blocks,
        num_heads=hparams.num_heads,
        dropout=hparams.dropout,
    )
    device = resolve_device(hparams.device)
    model = SASRec(config).to(device)
    log.info("training on %s: %s", device, config)
    summary = fit(
        model,
        pl.read_parquet(sequences_dir / schema.TRAIN_FILE),
        pl.read_parquet(sequences_dir / schema.VALID_FILE),
        hparams,
        log_metrics,
    )
    training_info = {
        "hparams": dataclasses.asdict(hparams),
        "device": str(device),
        **summary,
        **(lineage or {}),
    }
    save_model_dir(model, sequences_dir / schema.ITEM_VOCAB_FILE, training_info, model_dir)
    return summary
