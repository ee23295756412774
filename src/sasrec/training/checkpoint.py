"""The per-epoch training checkpoint: written whole to a path, a gs:// or an s3:// URI."""

import io
from pathlib import Path
from typing import Any

import torch

from sasrec import storage


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
