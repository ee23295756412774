"""The model artifact (a directory that describes itself) and the per-epoch training checkpoint."""

import dataclasses
import io
import shutil
from pathlib import Path
from typing import Any

import torch

from sasrec import storage
from sasrec.data import schema
from sasrec.errors import SASRecError
from sasrec.io import atomic_dir, read_json, require_complete, write_json
from sasrec.model import SASRec, SASRecConfig

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
TRAINING_FILE = "training.json"


def save_model_dir(
    model: SASRec, item_vocab_path: Path, training_info: dict[str, Any], out_dir: str | Path
) -> None:
    """Write the model artifact directory atomically.

    Args:
        model: The trained model (its weights are saved from CPU copies).
        item_vocab_path: `item_vocab.parquet` of the sequences the model was trained on.
        training_info: Hyperparameters, results and lineage, saved as training.json.
        out_dir: The directory to fill (its earlier content is replaced).
    """
    with atomic_dir(out_dir) as tmp:
        state = {name: tensor.cpu() for name, tensor in model.state_dict().items()}
        torch.save(state, tmp / WEIGHTS_FILE)
        write_json(dataclasses.asdict(model.config), tmp / CONFIG_FILE)
        shutil.copyfile(item_vocab_path, tmp / schema.ITEM_VOCAB_FILE)
        titles_path = item_vocab_path.with_name(schema.ITEM_TITLES_FILE)
        if titles_path.is_file():
            shutil.copyfile(titles_path, tmp / schema.ITEM_TITLES_FILE)
        write_json(training_info, tmp / TRAINING_FILE)


def load_model_dir(model_dir: str | Path, device: torch.device) -> SASRec:
    """Load a model artifact in eval mode; weights are read without unpickling objects.

    Raises:
        SASRecError: when `model_dir` is not a model directory, or a half-written one.
    """
    model_dir = Path(model_dir)
    if not (model_dir / WEIGHTS_FILE).is_file():
        raise SASRecError(
            f"{model_dir} is not a model directory (no {WEIGHTS_FILE}); give the output of "
            "`sasrec train`"
        )
    require_complete(model_dir, "`sasrec train`")
    config = SASRecConfig(**read_json(model_dir / CONFIG_FILE))
    model = SASRec(config)
    state = torch.load(model_dir / WEIGHTS_FILE, map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval()


def read_training_info(model_dir: str | Path) -> dict[str, Any]:
    """The training.json of a model artifact."""
    return read_json(Path(model_dir) / TRAINING_FILE)


def save_checkpoint(checkpoint: dict[str, Any], uri: str | Path) -> None:
    """Write a training checkpoint whole to a path, gs:// or s3:// URI.

    A kill mid-write leaves the previous checkpoint: a local file is renamed into place, an
    object is replaced by one upload.
    """
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    storage.write_bytes(buffer.getvalue(), uri)


def load_checkpoint(uri: str | Path, device: torch.device) -> dict[str, Any] | None:
    """The checkpoint at `uri`, or None when there is none; read without unpickling objects."""
    data = storage.read_bytes(uri)
    if data is None:
        return None
    return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
