"""Training hyperparameters: one frozen dataclass whose defaults are the recipe."""

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from sasrec.errors import SASRecError

LOSSES = ("bce", "sampled_softmax", "ce", "gbce")  # see sasrec.losses
LR_SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class HParams:
    """SASRec hyperparameters.

    The defaults are the best recipe measured on the SASRec paper's Games data within 10
    minutes of a 2-core CPU (docs/benchmarks.md): the paper's depth, heads and max_len;
    softmax over 1,024 sampled items instead of BCE with one, wider, more dropout, bigger
    batches, a moving average of the weights. The paper's own settings: {"loss": "bce",
    "num_negatives": 1, "hidden_size": 50, "dropout": 0.5, "batch_size": 128, "lr": 0.001,
    "max_epochs": 200, "ema_decay": 0}. On a GPU, {"loss": "ce", "compile": true}.
    """

    max_len: int = 50
    hidden_size: int = 64
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.7  # raises the paper's sampled metric; see docs/benchmarks.md
    batch_size: int = 256
    lr: float = 0.002
    lr_schedule: str = "constant"  # cosine: from lr down to 0 over max_epochs, set per epoch
    max_epochs: int = 60
    loss: str = "sampled_softmax"  # see sasrec.losses; "bce" is the paper's
    num_negatives: int = 1024  # more learn more per second on CPU; see docs/benchmarks.md
    seed: int = 42
    device: str = "auto"
    eval_every: int = 5  # epochs between validation passes
    patience: int = 5  # validation passes without a better NDCG@10 before stopping
    max_val_users: int = 10_000  # early stopping looks at a seeded sample of this many; 0: all
    gbce_t: float = 0.75  # gSASRec's calibration t in [0, 1]; only for loss "gbce"
    compile: bool = False  # torch.compile the training step (worth it on a GPU)
    ema_decay: float = 0.999  # validate and keep a moving average of the weights; 0: off

    def __post_init__(self) -> None:
        """Reject values that cannot train, naming the field and the allowed range."""
        positive = ("max_len", "hidden_size", "num_blocks", "num_heads", "batch_size")
        for name in (*positive, "max_epochs", "num_negatives", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise SASRecError(f"hparam {name}={getattr(self, name)} must be at least 1")
        if self.hidden_size % self.num_heads:
            raise SASRecError(
                f"hparam hidden_size={self.hidden_size} must be divisible by "
                f"num_heads={self.num_heads}"
            )
        if self.max_val_users < 0:
            raise SASRecError(f"hparam max_val_users={self.max_val_users} must be 0 (all) or more")
        if not 0.0 <= self.dropout < 1.0:
            raise SASRecError(f"hparam dropout={self.dropout} must be in [0, 1)")
        if self.lr <= 0:
            raise SASRecError(f"hparam lr={self.lr} must be positive")
        if not 0.0 <= self.ema_decay < 1.0:
            raise SASRecError(f"hparam ema_decay={self.ema_decay} must be in [0, 1) (0: off)")
        if not 0.0 <= self.gbce_t <= 1.0:
            raise SASRecError(f"hparam gbce_t={self.gbce_t} must be in [0, 1]")
        if self.lr_schedule not in LR_SCHEDULES:
            raise SASRecError(
                f"hparam lr_schedule={self.lr_schedule!r} is not one of {', '.join(LR_SCHEDULES)}"
            )
        if self.loss not in LOSSES:
            raise SASRecError(f"hparam loss={self.loss!r} is not one of {', '.join(LOSSES)}")
        if self.device not in DEVICES:
            raise SASRecError(f"hparam device={self.device!r} is not one of {', '.join(DEVICES)}")


def parse_hparams(overrides: str | dict[str, Any] | None) -> HParams:
    """Build HParams from a JSON object (string or dict) of overrides.

    Args:
        overrides: JSON text or a dict mapping field names to values; None or "" for defaults.

    Raises:
        SASRecError: on invalid JSON, unknown keys, wrong types or out-of-range values.
    """
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides) if overrides.strip() else {}
        except json.JSONDecodeError as err:
            raise SASRecError(f"--hparams is not valid JSON ({err}): {overrides!r}") from err
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise SASRecError(f"--hparams must be a JSON object, got {overrides!r}")
    fields = {field.name: field for field in dataclasses.fields(HParams)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise SASRecError(f"unknown hparams {', '.join(unknown)}; valid keys: {', '.join(fields)}")
    defaults = HParams()
    values = {}
    for name, value in overrides.items():
        expected = type(getattr(defaults, name))
        # JSON and KFP's protobuf Struct have one number type: accept 1 for a float field and
        # 2.0 for an int field, never 1.5 for an int field.
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        integral = is_number and float(value).is_integer()
        if not (
            (expected is bool and isinstance(value, bool))
            or (expected is str and isinstance(value, str))
            or (expected is float and is_number)
            or (expected is int and integral)
        ):
            raise SASRecError(f"hparam {name}={value!r} must be of type {expected.__name__}")
        values[name] = expected(value)
    return HParams(**values)
