"""Device selection."""

import torch

from sasrec.errors import SASRecError


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available, else CPU; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SASRecError("device 'cuda' was asked for but no CUDA GPU is visible; use auto or cpu")
    return torch.device(name)
