"""The model directory: the artifact every step after training reads, written and loaded whole.

Its file names are defined here, for the writer, the readers and the served model alike.
"""

import dataclasses
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from sasrec.data import schema
from sasrec.errors import SASRecError
from sasrec.filenames import CONFIG_FILE, POPULAR_FILE, TRAINING_FILE, WEIGHTS_FILE
from sasrec.io import atomic_dir, read_json, require_complete, write_json
from sasrec.model import PAD, SASRec, load_sasrec

NUM_POPULAR = 1000  # most popular items kept: the most a history of unknown items gets


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every floating-point tensor holds only finite values (one host sync)."""
    checks = [tensor.isfinite().all() for tensor in tensors if tensor.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


def save_model_dir(
    model: SASRec,
    sequences_dir: Path,
    training_info: dict[str, Any],
    out_dir: str | Path,
    popularity: torch.Tensor,
) -> None:
    """Write the model artifact directory atomically.

    Args:
        model: The trained model (its weights are saved from CPU copies).
        sequences_dir: The sequences it was trained on: their item vocabulary (and titles)
            go with it.
        training_info: Hyperparameters, results and lineage, saved as training.json.
        out_dir: The directory to fill (an earlier model there is replaced).
        popularity: (num_items + 1,) training counts: the most popular items are kept as
            the answer to a history the model cannot read.

    Raises:
        SASRecError: when a weight is not finite: such a model is never written.
    """
    state = {name: tensor.cpu() for name, tensor in model.state_dict().items()}
    if not all_finite(state.values()):
        raise SASRecError(f"the trained model has non-finite weights: {out_dir} not written")
    with atomic_dir(out_dir, schema.TRAIN_STEP) as tmp:
        torch.save(state, tmp / WEIGHTS_FILE)
        write_json(dataclasses.asdict(model.config), tmp / CONFIG_FILE)
        for name in (schema.ITEM_VOCAB_FILE, schema.ITEM_TITLES_FILE):
            if (sequences_dir / name).is_file():  # titles only where the download fetched them
                shutil.copyfile(sequences_dir / name, tmp / name)
        write_json(training_info, tmp / TRAINING_FILE)
        write_json(most_popular(popularity), tmp / POPULAR_FILE)


def most_popular(popularity: torch.Tensor, count: int = NUM_POPULAR) -> dict[str, list]:
    """The `count` most popular items, most first: {"item_index": [...], "count": [...]}."""
    counts = popularity.double().clone()
    counts[PAD] = -1.0  # never padding
    top = counts.topk(min(count, len(counts) - 1))
    return {"item_index": top.indices.tolist(), "count": top.values.tolist()}


def load_model_dir(model_dir: str | Path, device: torch.device) -> SASRec:
    """Load a model artifact in eval mode; weights are read without unpickling objects.

    Raises:
        SASRecError: when `model_dir` is not a whole model directory, or its files do not
            load into a model with finite weights.
    """
    model_dir = require_complete(model_dir, schema.TRAIN_STEP)
    what = f"{model_dir} is not a model directory of `sasrec train`"
    try:
        model = load_sasrec(model_dir / CONFIG_FILE, model_dir / WEIGHTS_FILE, device)
    except Exception as err:  # a damaged file fails torch.load in many ways, all one answer
        raise SASRecError(
            f"{what} ({type(err).__name__}: {err}); give the output of `sasrec train`"
        ) from err
    if not all_finite(model.state_dict().values()):
        raise SASRecError(f"{model_dir} holds non-finite weights; train the model again")
    return model


def read_training_info(model_dir: str | Path) -> dict[str, Any]:
    """The training.json of a model artifact."""
    return read_json(Path(model_dir) / TRAINING_FILE)
