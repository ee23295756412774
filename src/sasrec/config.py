"""Training hyperparameters: one frozen dataclass whose defaults are the recipe."""

import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from typing import Any

from sasrec.errors import SASRecError

DEFAULT_PROMOTION_METRIC = "ndcg@10"  # the test metric that decides promotion
LOSSES = ("bce", "sampled_softmax", "ce", "gbce")  # see sasrec.training.losses
LR_SCHEDULES = ("constant", "cosine")
BLOCKS = ("sasrec", "gated")  # see sasrec.model.BLOCKS
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class HParams:
    """SASRec hyperparameters.

    The defaults are the best recipe measured on the SASRec paper's Games data within 10
    minutes of a 2-core CPU (docs/benchmarks.md): the paper's depth, heads and max_len;
    softmax over 1,024 sampled items instead of BCE with one, wider, bigger batches, a
    moving average of the weights, and dropout chosen from the data's density: 0.7 on
    sparse data like the paper's, down to 0.2 on dense data
    (`sasrec.training.data_defaults.dropout_for_data`, the quality matrix in docs/benchmarks.md);
    after training, the training transitions mixed into the scores at the weight that
    validates best (`sasrec.training.transition_mix`).
    The paper's own settings: {"loss": "bce", "num_negatives": 1, "hidden_size": 50,
    "dropout": 0.5, "batch_size": 128, "lr": 0.001, "max_epochs": 200, "ema_decay": 0,
    "transition_weight": 0}.
    On a GPU, {"loss": "ce", "compile": true}.
    """

    max_len: int = 50
    hidden_size: int = 64
    num_blocks: int = 2
    num_heads: int = 1
    block: str = "sasrec"  # "gated": LiGR's gated residuals and SwiGLU (sasrec.model)
    # False: items are scored with output embeddings of their own. Tied stays the default:
    # untied wins on random bigram chains only (docs/benchmarks.md, issue 28)
    tied_embeddings: bool = True
    # Share of the training sequences' transition probabilities (of the user's last item)
    # in the scores; None: chosen on the validation users after training, 0 (the paper's
    # model) up to 0.99 (`sasrec.training.transition_mix`); 0: none
    transition_weight: float | None = None
    dropout: float | None = None  # None: from the data's density (`dropout_for_data`)
    batch_size: int = 256
    lr: float = 0.002
    lr_schedule: str = "constant"  # cosine: from lr down to 0 over max_epochs, set per epoch
    max_epochs: int = 60
    loss: str = "sampled_softmax"  # see sasrec.training.losses; "bce" is the paper's
    num_negatives: int = 1024  # more learn more per second on CPU; see docs/benchmarks.md
    seed: int = 42
    device: str = "auto"
    # Epochs between validation passes; None: from the batches per epoch, every 5 epochs down
    # to every epoch, so that passes come about 2,048 steps apart (`eval_every_for_data`)
    eval_every: int | None = None
    patience: int = 5  # validation passes without a better NDCG@10 before stopping
    max_val_users: int = 10_000  # early stopping looks at a seeded sample of this many; 0: all
    gbce_t: float = 0.75  # gSASRec's calibration t in [0, 1]; only for loss "gbce"
    compile: bool = False  # torch.compile the training step (worth it on a GPU)
    ema_decay: float = 0.999  # validate and keep a moving average of the weights; 0: off
    # A step updates only the item rows its batch uses (row-wise Adam), so that its cost
    # follows the batch, not the catalogue; `ce` scores every item and always updates all.
    sparse_item_updates: bool = True

    def __post_init__(self) -> None:
        """Reject values that cannot train, naming the field and the allowed range."""
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if value is None:  # chosen from the data when training starts
                continue
            _require(low <= value <= high, name, value, f"{low}..{high}")
        for name, (low, high, high_included) in FLOAT_RANGES.items():
            value = getattr(self, name)
            if value is None:  # chosen from the data when training starts
                continue
            inside = (
                math.isfinite(value)
                and low <= value
                and (value < high or (high_included and value == high))
            )
            _require(inside, name, value, f"[{low}, {high}{']' if high_included else ')'}")
        _require(self.lr > 0, "lr", self.lr, "positive")
        if self.hidden_size % self.num_heads:
            raise SASRecError(
                f"hparam hidden_size={self.hidden_size} must be divisible by "
                f"num_heads={self.num_heads}"
            )
        for name, choices in (
            ("lr_schedule", LR_SCHEDULES),
            ("loss", LOSSES),
            ("device", DEVICES),
            ("block", BLOCKS),
        ):
            _require(getattr(self, name) in choices, name, getattr(self, name), ", ".join(choices))


# Allowed ranges, wide enough for any real run and narrow enough to catch a typo before a
# run fails late (an out-of-memory model, a learning rate that makes the weights NaN).
INT_RANGES = {
    "max_len": (1, 100_000),
    "hidden_size": (1, 16_384),
    "num_blocks": (1, 256),
    "num_heads": (1, 1_024),
    "batch_size": (1, 10_000_000),
    "max_epochs": (1, 1_000_000),
    "num_negatives": (1, 10_000_000),
    "seed": (0, 2**63 - 1),
    "eval_every": (1, 1_000_000),
    "patience": (1, 1_000_000),
    "max_val_users": (0, 10**12),  # 0: all
}
FLOAT_RANGES = {  # (low, high, high included); every float must also be finite
    "dropout": (0.0, 1.0, False),
    "lr": (0.0, 1.0, True),
    "gbce_t": (0.0, 1.0, True),
    "ema_decay": (0.0, 1.0, False),  # 0: off
    "transition_weight": (0.0, 1.0, False),  # 1: the counts alone, their ties left unbroken
}


def _require(ok: bool, name: str, value: Any, allowed: str) -> None:
    if not ok:
        raise SASRecError(f"hparam {name}={value!r} is out of range; allowed: {allowed}")


def read_overrides(text: str | None) -> dict[str, Any]:
    """The hparams overrides of a JSON object given as text ("" or None: none).

    Hyperparameters cross every process boundary (a pipeline parameter, a torchrun worker's
    command line) in this form, and become an `HParams` once in each process.

    Raises:
        SASRecError: on invalid JSON, or JSON that is not an object.
    """
    try:
        overrides = json.loads(text) if text and text.strip() else {}
    except json.JSONDecodeError as err:
        raise SASRecError(f"--hparams is not valid JSON ({err}): {text!r}") from err
    if not isinstance(overrides, dict):
        raise SASRecError(f"--hparams must be a JSON object, got {overrides!r}")
    return overrides


def overrides_of(hparams: HParams) -> dict[str, Any]:
    """The fields of `hparams` that differ from the defaults: what `parse_hparams` takes back."""
    defaults = HParams()
    return {
        field.name: getattr(hparams, field.name)
        for field in dataclasses.fields(HParams)
        if getattr(hparams, field.name) != getattr(defaults, field.name)
    }


def parse_hparams(overrides: str | dict[str, Any] | None) -> HParams:
    """Build HParams from a JSON object (string or dict) of overrides.

    Args:
        overrides: JSON text or a dict mapping field names to values; None or "" for defaults.

    Raises:
        SASRecError: on invalid JSON, unknown keys, wrong types or out-of-range values.
    """
    if isinstance(overrides, str):
        overrides = read_overrides(overrides)
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise SASRecError(f"--hparams must be a JSON object, got {overrides!r}")
    fields = {field.name: field for field in dataclasses.fields(HParams)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise SASRecError(f"unknown hparams {', '.join(unknown)}; valid keys: {', '.join(fields)}")
    values = {}
    for name, value in overrides.items():
        expected, *optional = typing.get_args(fields[name].type) or (fields[name].type,)
        if optional and value is None:  # `X | None`: None asks for the data's choice
            values[name] = None
            continue
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
