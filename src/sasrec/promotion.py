"""Champion/challenger: a new model version takes the `champion` alias only when it wins.

Both models are scored by the same code (`evaluate.rank_held_out`, history excluded, the
same sampled negatives) on the same users: this run's test users. The challenger reads
them in its own catalogue. A champion of another catalogue (trained on other data) is
scored through original item ids: it reads the history items it knows (the others are
skipped), and it cannot recommend an item it never saw, so a held-out item outside its
catalogue is a miss for it. It is judged on what it would have served these users.
"""

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

from sasrec.checkpoint import load_model_dir
from sasrec.data import schema
from sasrec.data.sequences import known_sequences
from sasrec.errors import SASRecError
from sasrec.evaluate import item_popularity, rank_held_out, user_items
from sasrec.inputs import SequenceFiles, read_item_vocab
from sasrec.metrics import KS
from sasrec.model import PAD, SASRec

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
DEFAULT_METRIC = "ndcg@10"  # on the test users, full catalogue


@dataclass(frozen=True)
class Decision:
    """What the promote step decided, and the scores it decided on."""

    decision: str  # first champion | promoted | kept champion | already champion | not registered
    promoted: bool  # whether this run's version holds the alias now
    metric: str
    registered_model_name: str | None = None
    version: str | None = None
    challenger_score: float | None = None
    champion_version: str | None = None
    champion_score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The decision as promotion.json holds it."""
        return asdict(self)


class CatalogueMapped:
    """A model of another catalogue, as a scorer of this one through original item ids.

    `to_model[i]` is the model's index of this catalogue's item i (PAD when unknown).
    """

    def __init__(self, model: SASRec, to_model: torch.Tensor) -> None:
        self.model = model
        self.to_model = to_model  # (N + 1,)
        self.unknown = to_model == PAD  # (N + 1,) items the model cannot score

    def __call__(self, item_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) items of this catalogue -> (B, N + 1) scores; -inf for unknown items."""
        mapped = self.to_model.to(item_ids.device)[item_ids]  # unknown items become padding
        # Drop the gaps: known items move right, in order, so the history stays contiguous.
        order = torch.sort((mapped != PAD).to(torch.int8), dim=1, stable=True).indices
        scores = self.model(mapped.gather(1, order))  # (B, M + 1)
        scores = scores[:, self.to_model.to(scores.device)]  # (B, N + 1)
        scores[:, self.unknown.to(scores.device)] = float("-inf")
        return scores


def catalogue_mapping(ours: pl.DataFrame, theirs: pl.DataFrame) -> torch.Tensor:
    """(len(ours) + 1,): for each of our item indices, theirs for the same item id, else PAD."""
    joined = ours.join(theirs, on=schema.ITEM_ID, how="left", suffix="_theirs")
    mapping = torch.zeros(len(ours) + 1, dtype=torch.long)
    indices = torch.from_numpy(joined[schema.ITEM_INDEX].to_numpy()).long()
    theirs_indices = joined[f"{schema.ITEM_INDEX}_theirs"].fill_null(PAD).to_numpy()
    mapping[indices] = torch.from_numpy(theirs_indices).long()
    return mapping


def score_on_test(
    model: SASRec,
    model_vocab: pl.DataFrame,
    sequences: SequenceFiles,
    seen: pl.Series,
    popularity: torch.Tensor,
) -> dict[str, float]:
    """The model's test metrics on `sequences`, in the sequences' catalogue (see module doc).

    Args:
        model: The model to score.
        model_vocab: Its item vocabulary (another catalogue's is mapped through item ids).
        sequences: This run's sequences.
        seen: Per test row, all its user's items (`evaluate.user_items`).
        popularity: Training counts of the sequences' items (`evaluate.item_popularity`).
    """
    num_items = len(sequences.item_vocab)
    scorer: Any = model
    if not model_vocab.equals(sequences.item_vocab):
        mapping = catalogue_mapping(sequences.item_vocab, model_vocab)
        log.info(
            "scoring a model of another catalogue: %d of its %d items are among these %d",
            int((mapping != PAD).sum()), len(model_vocab), num_items,
        )  # fmt: skip
        scorer = CatalogueMapped(model, mapping)
    ranks = rank_held_out(
        scorer, sequences.test, num_items, model.config.max_len, popularity=popularity, seen=seen
    )
    return ranks.metrics()


PROTOCOL_PREFIXES = ("", "sampled_", "popsampled_")  # see HeldOutRanks.metrics
METRICS = tuple(
    f"{prefix}{name}@{k}" for prefix in PROTOCOL_PREFIXES for name in ("ndcg", "hit", "mrr")
    for k in KS
)  # fmt: skip


def require_metric(metric: str) -> None:
    """Refuse a promotion metric that evaluation does not compute.

    Raises:
        SASRecError: naming the metrics there are.
    """
    if metric not in METRICS:
        raise SASRecError(
            f"promotion metric {metric!r} is not a test metric; choose one of {', '.join(METRICS)}"
        )


def compare(
    challenger: tuple[SASRec, pl.DataFrame],
    champion: tuple[SASRec, pl.DataFrame],
    sequences: SequenceFiles,
    metric: str,
) -> tuple[float, float]:
    """(challenger score, champion score) on `metric`, both by `score_on_test`."""
    known = known_sequences(sequences.train, sequences.valid, sequences.test)
    common = {
        "sequences": sequences,
        "seen": user_items(sequences.test, known),
        "popularity": item_popularity(sequences.train, len(sequences.item_vocab)),
    }
    challenger_score = score_on_test(*challenger, **common)[metric]
    return challenger_score, score_on_test(*champion, **common)[metric]


def load_for_scoring(model_dir: Path) -> tuple[SASRec, pl.DataFrame]:
    """A model directory's model (CPU) and item vocabulary."""
    model = load_model_dir(model_dir, torch.device("cpu"))
    return model, read_item_vocab(model_dir / schema.ITEM_VOCAB_FILE, "a model directory")
