"""The training loop: fit SASRec on the training sequences, early-stopped on validation NDCG@10."""

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from sasrec import storage
from sasrec.config import HParams
from sasrec.data import schema
from sasrec.device import resolve_device
from sasrec.errors import SASRecError
from sasrec.inputs import SequenceFiles, read_sequences
from sasrec.model import PAD, SASRec, SASRecConfig
from sasrec.model_dir import all_finite, save_model_dir
from sasrec.scoring import item_popularity, rank_held_out
from sasrec.tensors import length_bucketed_batches, pad_left
from sasrec.training import distributed
from sasrec.training.checkpoint import load_checkpoint, save_checkpoint
from sasrec.training.data_defaults import log_popularity, with_data_defaults
from sasrec.training.item_rows import BatchRows, SparseItemTable
from sasrec.training.losses import NextItemObjective, gbce_beta, sample_negatives
from sasrec.training.preemption import Preempted, StopRequests
from sasrec.training.state import (
    SELECTION_METRIC,
    BestSoFar,
    EpochInterrupted,
    EpochProgress,
    TrainingState,
    checkpoint_identity,
    rng_state,
    weight_average,
)
from sasrec.training.transition_mix import choose_transition_weight, with_transitions
from sasrec.transitions import Transitions

log = logging.getLogger(__name__)

MetricsCallback = Callable[[dict[str, float], int], None]


def _no_logging(metrics: dict[str, float], epoch: int) -> None:
    del metrics, epoch


def learning_rate(hparams: HParams, epoch: int) -> float:
    """The learning rate of `epoch` (1-based): constant, or cosine from lr towards 0."""
    if hparams.lr_schedule == "constant":
        return hparams.lr
    return hparams.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / hparams.max_epochs))


def _never() -> bool:
    return False


STOP_CHECK_EVERY = 16  # batches between SIGTERM checks under torchrun (see train_epoch)


def train_epoch(
    trainer: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    sequences: torch.Tensor,
    lengths: torch.Tensor,
    hparams: HParams,
    generator: torch.Generator,
    num_items: int,
    after_step: Callable[[torch.Tensor | None], None] | None = None,
    resume_from: EpochProgress | None = None,
    stop_requested: Callable[[], bool] = _never,
    item_table: SparseItemTable | None = None,
) -> float:
    """One pass over the training sequences; returns the mean loss over all processes.

    Args:
        trainer: `NextItemObjective` (or its DDP wrapper), in train mode.
        optimizer: Its optimizer (of every weight but the item table's, with `item_table`).
        sequences: (U, max_len + 1) left-padded item sequences, on the model's device.
        lengths: (U,) non-padding items per row (at least 2), on CPU.
        hparams: Batch size, loss and negatives.
        generator: CPU generator for batch order and negative samples; every process draws
            the same numbers and keeps its own rows of each batch.
        num_items: Catalogue size.
        after_step: Called after every optimizer step (the weight average's update) with
            the items whose rows the step changed, or None when it changed every row.
        resume_from: An interrupted epoch's progress: the same batch plan, from the next batch.
        stop_requested: Asked after every step (the same answer in every process).
        item_table: Updates the item rows each batch uses, and only those; None: the
            optimizer updates the whole item table.

    Raises:
        EpochInterrupted: when `stop_requested` says so, with the progress to resume from.
    """
    device = sequences.device
    world = distributed.rank_and_world()[1]
    plan_state = resume_from.plan_state if resume_from else generator.get_state()
    generator.set_state(plan_state)
    batches = length_bucketed_batches(lengths, hparams.batch_size, generator)
    total_loss = torch.zeros((), device=device)
    first_batch, num_batches = 0, 0
    if resume_from is not None:
        generator.set_state(resume_from.generator_state)
        first_batch, num_batches = resume_from.batches_done, resume_from.steps
        total_loss += resume_from.loss_sum  # float32 -> float -> float32 is exact
    use_bf16 = device.type == "cuda"
    for index in range(first_batch, len(batches)):
        share = _process_share(
            sequences, lengths, batches[index], hparams, generator, num_items, item_table
        )
        if share is None:
            continue  # every process needs a row
        rows, batch = share
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = trainer(*batch) if rows is None else trainer(*batch, rows.weight, rows.bias)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if rows is not None:
            item_table.step(rows)
        if after_step is not None:
            after_step(None if rows is None else rows.items)
        total_loss += loss.detach()  # no .item(): a GPU would wait for every step
        num_batches += 1
        # Processes agree on stopping through a collective, which waits for the GPU: asked
        # every STOP_CHECK_EVERY batches only. One process asks after every batch, for free.
        ask = world == 1 or (index + 1) % STOP_CHECK_EVERY == 0
        if ask and stop_requested():  # after the last batch too: validation can wait
            progress = EpochProgress(
                plan_state, generator.get_state(), index + 1, float(total_loss), num_batches
            )
            raise EpochInterrupted(progress)
    return distributed.mean_over_processes(total_loss / max(num_batches, 1))


def _process_share(
    sequences: torch.Tensor,
    lengths: torch.Tensor,
    rows: torch.Tensor,
    hparams: HParams,
    generator: torch.Generator,
    num_items: int,
    item_table: SparseItemTable | None = None,
) -> tuple[BatchRows | None, list[torch.Tensor]] | None:
    """This process's [inputs, positives, negatives] of a batch; None when it gets no row.

    With `item_table`, the item rows of the whole batch come first and the ids number
    them: every process holds the same rows, so their gradients can be averaged. The
    negatives are drawn for the whole batch in every process, a skipped batch too, so that
    all processes' generators stay in step.
    """
    rank, world = distributed.rank_and_world()
    device = sequences.device
    width = int(lengths[rows].max())
    batch = sequences[rows.to(device), -width:]  # (B, W) trimmed to the longest
    negatives = sample_negatives(
        hparams.loss, hparams.num_negatives, batch[:, 1:].shape, num_items, generator
    ).to(device)
    if world > 1 and len(rows) < world:
        return None
    share = [batch[:, :-1], batch[:, 1:], negatives]
    item_rows = None
    if item_table is not None:
        item_rows, share = item_table.gather(*share)
    if world > 1:
        share[0], share[1] = share[0][rank::world], share[1][rank::world]
        if negatives.dim() == 3:
            share[2] = share[2][rank::world]
    return item_rows, share


def training_tensors(train: pl.DataFrame, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, max_len + 1) padded sequences of users with at least 2 items, and their lengths."""
    usable = train.filter(pl.col(schema.ITEM_SEQUENCE).list.len() >= 2)
    sequences = pad_left(usable[schema.ITEM_SEQUENCE], max_len + 1)
    return sequences, (sequences != PAD).sum(1)


def data_fingerprint(sequences: torch.Tensor, valid: pl.DataFrame, num_items: int) -> str:
    """sha256 of what a run depends on: training sequences, validation examples, catalogue.

    The validation examples are those early stopping looks at: other ones select another
    epoch, so a checkpoint made with them is not resumed.
    """
    digest = hashlib.sha256(str(num_items).encode())
    digest.update(sequences.cpu().numpy().tobytes())
    histories = valid[schema.HISTORY]
    for values in (histories.list.len(), histories.explode().fill_null(PAD), valid[schema.TARGET]):
        digest.update(values.cast(pl.Int64).to_numpy().tobytes())
    return digest.hexdigest()


def validate(model: SASRec, valid: pl.DataFrame) -> dict[str, float]:
    """Full-catalogue validation metrics (`val_ndcg@10`, `val_hit@10`)."""
    device = next(model.parameters()).device
    config = model.config
    ranks = rank_held_out(
        model.eval(), valid, config.num_items, config.max_len, num_sampled=0, device=device
    )
    return ranks.metrics(prefix="val_", ks=(10,))


@dataclass
class Training:
    """One training run, set up: its data on the device, model, optimizer and identity."""

    hparams: HParams
    state: TrainingState
    objective: torch.nn.Module  # `NextItemObjective`, maybe wrapped in DDP and compiled
    sequences: torch.Tensor  # (U, max_len + 1) left-padded, on the model's device
    lengths: torch.Tensor  # (U,) on CPU
    valid: pl.DataFrame  # the validation users early stopping looks at
    identity: dict[str, Any]
    checkpoint_path: str | Path | None

    @property
    def resumed(self) -> bool:
        """Whether a checkpoint of this same run was found and restored."""
        return self.state.epoch > 0 or self.state.partial is not None

    @property
    def fingerprint(self) -> str:
        """sha256 of the data the run depends on (see `data_fingerprint`)."""
        return self.identity["data_fingerprint"]


# Early stopping's sample of validation users is drawn with this seed, never the run's: every
# trial of a sweep (a grid over `seed` too) is judged on the same users. It equals the
# default seed, so a run with the defaults validates on the users it always did.
VALIDATION_SAMPLE_SEED = 42


def validation_sample(valid: pl.DataFrame, max_users: int) -> pl.DataFrame:
    """The validation users early stopping looks at: a seeded sample of `max_users` (0: all)."""
    if 0 < max_users < valid.height:
        return valid.sample(max_users, seed=VALIDATION_SAMPLE_SEED)
    return valid


def start_training(
    train: pl.DataFrame,
    valid: pl.DataFrame,
    num_items: int,
    hparams: HParams,
    checkpoint_path: str | Path | None = None,
    device: torch.device | None = None,
) -> Training:
    """Set up a run and resume the checkpoint at `checkpoint_path` when it is of this run.

    A checkpoint of other data or hparams is deleted: the run starts afresh and its first
    epoch's checkpoint takes that place.

    Raises:
        SASRecError: when no training sequence has 2 items.
    """
    device = device or distributed.local_device(resolve_device(hparams.device))
    rank, world = distributed.rank_and_world()
    sequences, lengths = training_tensors(train, hparams.max_len)
    if len(sequences) == 0:
        raise SASRecError("no training sequence has 2 items: nothing to learn from")
    hparams = with_data_defaults(hparams, lengths, num_items)
    log.info("dropout %.3f, validation every %d epoch(s)", hparams.dropout, hparams.eval_every)
    valid = validation_sample(valid, hparams.max_val_users)
    model = initial_model(train, num_items, hparams).to(device)
    beta = gbce_beta(hparams.num_negatives, num_items, hparams.gbce_t)
    objective: torch.nn.Module = NextItemObjective(model, hparams.loss, beta)
    if world > 1:
        torch.manual_seed(hparams.seed + rank)  # each process its own dropout masks
        if sparse_items(hparams):  # the item table gets its gradients outside the model
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                objective, [f"model.{name}" for name in SparseItemTable.PARAMETERS]
            )
        objective = DistributedDataParallel(objective)
    if hparams.compile:
        objective = torch.compile(objective, dynamic=True)
    average = weight_average(model, hparams.ema_decay)
    item_table = SparseItemTable(model, hparams.lr, average) if sparse_items(hparams) else None
    dense = {
        name: param
        for name, param in model.named_parameters()
        if item_table is None or name not in SparseItemTable.PARAMETERS
    }
    state = TrainingState(
        model,
        torch.optim.Adam(dense.values(), lr=hparams.lr, betas=(0.9, 0.98), fused=True),
        torch.Generator().manual_seed(hparams.seed),
        BestSoFar(),
        average,
        item_table,
    )
    identity = checkpoint_identity(hparams, data_fingerprint(sequences, valid, num_items))
    checkpoint = _readable_checkpoint(checkpoint_path, device) if checkpoint_path else None
    if checkpoint is not None and checkpoint["identity"] == identity:
        state.restore(checkpoint)
        log.info("resumed from %s after epoch %d%s", checkpoint_path, state.epoch,
                 f", batch {state.partial.batches_done} of epoch {state.epoch + 1}"
                 if state.partial else "")  # fmt: skip
    elif checkpoint is not None:
        log.warning("checkpoint %s is of other data or hparams: starting afresh", checkpoint_path)
        if rank == 0:
            storage.remove_file(checkpoint_path)
    return Training(
        hparams, state, objective, sequences.to(device), lengths, valid, identity, checkpoint_path
    )


def _readable_checkpoint(path: str | Path, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint at `path`; None when there is none or it cannot be read.

    A truncated, empty or foreign file is like a checkpoint of other data: a warning, the
    file removed, a fresh start. It must not fail every retry of the job.
    """
    try:
        checkpoint = load_checkpoint(path, device)
        if checkpoint is None or checkpoint.keys() >= TrainingState.CHECKPOINT_KEYS:
            return checkpoint
        problem = f"keys missing: {sorted(TrainingState.CHECKPOINT_KEYS - checkpoint.keys())}"
    except SASRecError:
        raise  # the store cannot be read: a rerun may succeed, the file may be fine
    except Exception as err:  # torch.load fails in many ways on a damaged file, all one answer
        problem = f"{type(err).__name__}: {err}"
    log.warning("checkpoint %s cannot be read (%s): removed, starting afresh", path, problem)
    if distributed.is_main_process():
        storage.remove_file(path)
    return None


# After each epoch: (epoch, its metrics, the model that is validated and kept).
EpochHook = Callable[[int, dict[str, float], SASRec], None]


def _after_no_epoch(epoch: int, metrics: dict[str, float], model: SASRec) -> None:
    del epoch, metrics, model


def fit(training: Training, after_epoch: EpochHook = _after_no_epoch) -> dict[str, Any]:
    """Train with Adam, validating every `eval_every` epochs; ends with the best weights.

    After every epoch the state is checkpointed (when the run has a checkpoint path) and
    `after_epoch` is called, on rank 0 only. SIGTERM stops training after the current
    batch: the state is checkpointed at that batch and `Preempted` is raised.

    Returns:
        Summary: best epoch, best validation metrics, epochs run, seconds, data fingerprint.

    Raises:
        SASRecError: when the loss or the weights stop being finite, or the device runs out
            of memory (the last checkpoint is kept).
        Preempted: on SIGTERM, once the checkpoint is written.
    """
    state, hparams, best = training.state, training.hparams, training.state.best
    is_main = distributed.is_main_process()
    if state.epoch > 0 and is_main:
        # A kill between the checkpoint and the logging of its epoch must leave no gap.
        after_epoch(state.epoch, state.epoch_metrics, state.evaluated_model)
    start = time.perf_counter()
    progress = tqdm(
        range(state.epoch + 1, hparams.max_epochs + 1), desc="train", unit="epoch",
        initial=state.epoch, total=hparams.max_epochs, disable=not is_main,
    )  # fmt: skip
    with StopRequests() as stop:
        device = training.sequences.device

        def stop_requested() -> bool:
            return distributed.any_process(stop.requested, device)

        for epoch in progress:
            if best.evals_without_gain >= hparams.patience:
                break  # a resumed run that had already stopped early
            metrics = _close_epoch(
                training, epoch, _train_one_epoch(training, epoch, stop_requested)
            )
            if is_main:
                after_epoch(epoch, metrics, state.evaluated_model)
            progress.set_postfix(
                loss=f"{metrics['train_loss']:.4f}",
                best_val_ndcg=best.metrics.get(SELECTION_METRIC),
            )
            if best.evals_without_gain >= hparams.patience:
                log.info("early stop at epoch %d: best epoch %d", epoch, best.epoch)
                break
            if stop_requested() and epoch < hparams.max_epochs:
                raise Preempted(f"epoch {epoch} is checkpointed; a rerun continues from there")
    if best.state:
        state.model.load_state_dict(best.state)
    return {
        "best_epoch": best.epoch,
        **{f"best_{k}": v for k, v in best.metrics.items() if k.startswith("val_")},
        "epochs_run": state.epoch,
        "train_seconds": time.perf_counter() - start,
        "data_fingerprint": training.fingerprint,
    }


def _close_epoch(training: Training, epoch: int, metrics: dict[str, float]) -> dict[str, float]:
    """Validate when due, keep the best weights, record the epoch, checkpoint; its metrics."""
    state, hparams = training.state, training.hparams
    if epoch % hparams.eval_every == 0 or epoch == hparams.max_epochs:
        metrics |= validate(state.evaluated_model, training.valid)
        state.best.update(state.evaluated_model, metrics, epoch)
    state.epoch, state.epoch_metrics = epoch, metrics
    state.history.append(
        {"epoch": epoch, "timestamp_ms": int(time.time() * 1000), "metrics": metrics}
    )
    _save_checkpoint(training)
    return metrics


def _train_one_epoch(
    training: Training, epoch: int, stop_requested: Callable[[], bool] = _never
) -> dict[str, float]:
    """One epoch at its learning rate; its loss and seconds. Refuses non-finite results.

    An epoch that SIGTERM interrupted continues from its next batch. Stopped again, its
    place is checkpointed and `Preempted` raised.
    """
    state, hparams = training.state, training.hparams
    epoch_start = time.perf_counter()
    for optimizer in state.optimizers:  # the rate is a function of the epoch: resumes exactly
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(hparams, epoch)
    average = state.average
    after_step = partial(average.update_parameters, state.model) if average is not None else None
    device = training.sequences.device
    resume_from, state.partial = state.partial, None
    try:
        loss = train_epoch(
            training.objective.train(), state.optimizer, training.sequences, training.lengths,
            hparams, state.generator, state.model.config.num_items, after_step,
            resume_from, stop_requested, state.item_table,
        )  # fmt: skip
        if state.item_table is not None:  # the weights are validated and kept next
            state.item_table.finish_epoch()
    except EpochInterrupted as interrupted:
        state.partial = interrupted.progress
        saved = time.perf_counter()
        _save_checkpoint(training)
        where = f"batch {state.partial.batches_done} of epoch {epoch}"
        if distributed.is_main_process():
            log.warning("checkpointed at %s in %.1f s", where, time.perf_counter() - saved)
        raise Preempted(f"{where} is checkpointed; a rerun continues from there") from None
    except torch.OutOfMemoryError as err:
        raise SASRecError(
            f"{device} ran out of memory in epoch {epoch}: lower batch_size (now "
            f"{hparams.batch_size}), num_negatives ({hparams.num_negatives}) or max_len "
            f"({hparams.max_len}){_kept(training)}"
        ) from err
    problem = None if math.isfinite(loss) else f"the training loss became {loss}"
    if problem is None and not all_finite(state.evaluated_model.parameters()):
        problem = "the weights became non-finite"
    if problem:
        raise SASRecError(
            f"{problem} at epoch {epoch}: lower lr (now {hparams.lr}) or check the data"
            f"{_kept(training)}"
        )
    return {"train_loss": loss, "epoch_seconds": time.perf_counter() - epoch_start}


def _kept(training: Training) -> str:
    """What the error of a failed epoch says about the checkpoint."""
    epoch = training.state.epoch
    saved = training.checkpoint_path and epoch > 0
    return f"; the checkpoint of epoch {epoch} is kept" if saved else ""


def _save_checkpoint(training: Training) -> None:
    """Rank 0 writes the state after an epoch; every process hands it its random state."""
    if training.checkpoint_path is None:
        return
    device = training.sequences.device
    rng_states = distributed.gather_objects(rng_state(device))
    if distributed.is_main_process():
        save_checkpoint(
            training.state.to_checkpoint(training.identity, rng_states), training.checkpoint_path
        )


def sparse_items(hparams: HParams) -> bool:
    """Whether a step updates only the item rows its batch uses (every loss but `ce`)."""
    return hparams.sparse_item_updates and hparams.loss != "ce"


def model_config(num_items: int, hparams: HParams) -> SASRecConfig:
    """The model shape that `hparams` ask for; their dropout must be set (not None)."""
    if hparams.dropout is None:
        raise ValueError("model_config needs a dropout: see dropout_for_data")
    return SASRecConfig(
        num_items=num_items,
        max_len=hparams.max_len,
        hidden_size=hparams.hidden_size,
        num_blocks=hparams.num_blocks,
        num_heads=hparams.num_heads,
        dropout=hparams.dropout,
        block=hparams.block,
        tied=hparams.tied_embeddings,
    )


def initial_model(train: pl.DataFrame, num_items: int, hparams: HParams) -> SASRec:
    """A new SASRec, seeded by `hparams`, whose item bias starts at the log training counts."""
    torch.manual_seed(hparams.seed)
    model = SASRec(model_config(num_items, hparams))
    with torch.no_grad():
        # The best item bias of a softmax is the log of the item's frequency, up to a
        # constant. Starting there, the few negatives drawn per step need not teach it.
        model.item_bias.copy_(log_popularity(train, num_items))
    return model


def start_training_on(
    sequences: SequenceFiles, hparams: HParams, checkpoint_path: str | Path | None = None
) -> Training:
    """`start_training` on the output of the sequences step."""
    return start_training(
        sequences.train, sequences.valid, sequences.num_items, hparams, checkpoint_path
    )


def train_sasrec(
    sequences: str | Path | SequenceFiles,
    model_dir: str | Path,
    hparams: HParams,
    lineage: dict[str, Any] | None = None,
    log_metrics: MetricsCallback = _no_logging,
    checkpoint_path: str | Path | None = None,
) -> tuple[SASRec, dict[str, Any]]:
    """Train SASRec on the output of the sequences step and write the model directory.

    Args:
        sequences: Output of the sequences step, as a folder or read by `read_sequences`.
        model_dir: The model artifact directory to write.
        hparams: Hyperparameters.
        lineage: Extra facts stored in training.json (e.g. the MLflow run id).
        log_metrics: Called with each epoch's metrics and the epoch number.
        checkpoint_path: Where the per-epoch checkpoint lives; a run that finds a matching one
            continues from it. Deleted once the model directory is written.

    Returns:
        The trained model (best weights) and the training summary, also in training.json.
    """
    if not isinstance(sequences, SequenceFiles):
        sequences = read_sequences(sequences)
    training = start_training_on(sequences, hparams, checkpoint_path)
    trained = train_and_save(training, sequences, model_dir, lineage, log_metrics)
    if checkpoint_path and distributed.is_main_process():
        storage.remove_file(checkpoint_path)
    return trained


def train_and_save(
    training: Training,
    sequences: SequenceFiles,
    model_dir: str | Path,
    lineage: dict[str, Any] | None = None,
    log_metrics: MetricsCallback = _no_logging,
) -> tuple[SASRec, dict[str, Any]]:
    """Run a set-up training to its end and write the model directory (see `train_sasrec`).

    Under torchrun every process trains on its share of each batch; only rank 0 writes.
    The checkpoint stays: the caller removes it once nothing more can fail (`train_sasrec`
    at once, the train step after MLflow has everything).
    """
    model, device = training.state.model, training.sequences.device
    log.info("training on %s: %s", device, model.config)
    summary = fit(training, lambda epoch, metrics, _: log_metrics(metrics, epoch))
    if distributed.is_main_process():
        model, summary = mix_in_transitions(training, sequences.train, model, summary)
        weight = summary["transition_weight"]
        hparams = dataclasses.replace(training.hparams, transition_weight=weight)
        training_info = {
            "hparams": dataclasses.asdict(hparams),
            "device": str(device),
            "processes": distributed.rank_and_world()[1],
            **summary,
            **(lineage or {}),
        }
        popularity = item_popularity(sequences.train, model.config.num_items)
        save_model_dir(model, sequences.directory, training_info, model_dir, popularity)
    return model, summary


def mix_in_transitions(
    training: Training, train: pl.DataFrame, model: SASRec, summary: dict[str, Any]
) -> tuple[SASRec, dict[str, Any]]:
    """The trained model with the training transitions mixed in, at `transition_weight`.

    Returns:
        The model to keep, and the summary with the weight (chosen on the validation users
        when the hparam is None), the kept model's validation metrics as `best_val_*` and
        the trained model's own as `best_val_*_without_transitions`.
    """
    weight = training.hparams.transition_weight
    alone = {k: v for k, v in summary.items() if k.startswith("best_val_")}
    summary = summary | {f"{k}_without_transitions": v for k, v in alone.items()}
    if weight == 0.0:
        return model, summary | {"transition_weight": 0.0}
    transitions = Transitions.of_sequences(train, model.config.num_items)
    validation = partial(validate, valid=training.valid)
    if weight is None:
        model, weight, metrics = choose_transition_weight(model, transitions, validation)
    else:
        model = with_transitions(model, transitions, weight)
        metrics = validation(model)
    best = {f"best_{k}": v for k, v in metrics.items()}
    return model, summary | best | {"transition_weight": weight}
