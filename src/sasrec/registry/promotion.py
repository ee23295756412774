"""Champion/challenger: a new model version takes the `champion` alias only when it wins.

Both models are scored by the same code (`evaluate.rank_held_out`, history excluded, the
same sampled negatives) on the same users: this run's test users. The challenger reads
them in its own catalogue. A champion of another catalogue (trained on other data) is
scored through original item ids: it reads the history items it knows (the others are
skipped), and it cannot recommend an item it never saw, so a held-out item outside its
catalogue is a miss for it. It is judged on what it would have served these users.
"""

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

from sasrec.data import schema
from sasrec.data.sequences import known_sequences
from sasrec.errors import SASRecError
from sasrec.inputs import SequenceFiles, read_item_vocab
from sasrec.metrics import KS
from sasrec.model import PAD, SASRec
from sasrec.model_dir import load_model_dir
from sasrec.registry import versions
from sasrec.scoring import item_popularity, rank_held_out, user_items

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class Decision:
    """What the promote step decided, and the scores it decided on."""

    # first champion | promoted | kept champion | already champion | not registered |
    # replaced an unloadable champion
    decision: str
    promoted: bool  # whether this run's version holds the alias now
    metric: str
    registered_model_name: str | None = None
    version: str | None = None
    challenger_score: float | None = None
    champion_version: str | None = None
    champion_score: float | None = None
    champion_error: str | None = None  # why the champion could not be scored

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


def test_scorer(sequences: SequenceFiles, metric: str) -> Callable[[Path], float]:
    """A function from a model directory to its `metric` by `score_on_test` on `sequences`.

    What every model is scored with (seen items, popularity) is computed once.
    """
    known = known_sequences(sequences.train, sequences.valid, sequences.test)
    common = {
        "sequences": sequences,
        "seen": user_items(sequences.test, known),
        "popularity": item_popularity(sequences.train, len(sequences.item_vocab)),
    }

    def score(model_dir: Path) -> float:
        return score_on_test(*load_for_scoring(model_dir), **common)[metric]

    return score


def compare(
    challenger_dir: Path, champion_dir: Path, sequences: SequenceFiles, metric: str
) -> tuple[float, float]:
    """(challenger score, champion score) on `metric`, both by `score_on_test`."""
    score = test_scorer(sequences, metric)
    return score(challenger_dir), score(champion_dir)


def load_for_scoring(model_dir: Path) -> tuple[SASRec, pl.DataFrame]:
    """A model directory's model (CPU) and item vocabulary."""
    model = load_model_dir(model_dir, torch.device("cpu"))
    return model, read_item_vocab(model_dir / schema.ITEM_VOCAB_FILE, "a model directory")


MAX_ROUNDS = 5  # champions scored before giving up on a registry that keeps moving


def promote(
    tracking_uri: str, name: str, run_id: str, model_dir: Path, sequences_dir: Path, metric: str
) -> Decision:
    """Register the run's model under `name`; move `champion` to it when it wins on `metric`.

    Scoring happens without the lease; the move is decided under it, against the champion
    as it is then: if another run moved the alias meanwhile, the new champion is scored
    and the decision taken again. A champion that cannot be fetched or loaded yields to
    the challenger ("replaced an unloadable champion", with the cause).

    Raises:
        ServiceUnavailable: when the registry does not answer.
        SASRecError: when the champion moved `MAX_ROUNDS` times while this run scored.
    """
    from sasrec import tracking
    from sasrec.inputs import read_sequences
    from sasrec.registry.lease import registry_lease

    version = versions.register_run_model(tracking_uri, name, run_id)
    named = {"registered_model_name": name, "version": version}
    champions: dict[str, float | str] = {}  # version -> its score, or why it cannot be scored
    score: Callable[[Path], float] | None = None
    challenger_score = 0.0
    for _ in range(MAX_ROUNDS):
        champion = versions.version_with_alias(tracking_uri, name, CHAMPION_ALIAS)
        if champion not in (None, version) and champion not in champions:
            if score is None:
                score = test_scorer(read_sequences(sequences_dir), metric)
                challenger_score = score(model_dir)
            champions[champion] = _champion_score(tracking_uri, name, champion, score)
        with registry_lease(tracking.mlflow_client(tracking_uri), name):
            if versions.version_with_alias(tracking_uri, name, CHAMPION_ALIAS) != champion:
                log.info("the champion of %s moved while this run scored: again", name)
                continue
            decision = _decide(champion, challenger_score, champions, metric, named)
            if decision.promoted and champion != version:
                versions.set_alias(tracking_uri, name, CHAMPION_ALIAS, version)
        return decision
    raise SASRecError(
        f"the champion of {name} moved {MAX_ROUNDS} times while this run scored it; rerun"
    )


def _champion_score(
    tracking_uri: str, name: str, champion: str, score: Callable[[Path], float]
) -> float | str:
    """The champion's score, or the one-line reason it cannot be fetched or loaded."""
    import tempfile

    from sasrec import tracking
    from sasrec.errors import ServiceUnavailable, one_line

    with tempfile.TemporaryDirectory() as scratch:
        try:
            with tracking.registry_errors(tracking_uri, f"fetch version {champion} of {name}"):
                champion_dir = versions.download_model_dir(
                    tracking_uri, name, champion, Path(scratch)
                )
            return score(champion_dir)
        except ServiceUnavailable:
            raise  # the registry is away: a rerun decides, nothing is moved now
        except SASRecError as err:
            log.warning("the champion, version %s of %s, cannot be scored: %s", champion, name,
                        one_line(err))  # fmt: skip
            return one_line(err)


def _decide(
    champion: str | None,
    new_score: float,
    champions: dict[str, float | str],
    metric: str,
    named: dict[str, Any],
) -> Decision:
    """The decision against `champion`, from the scores taken (see `promote`)."""
    if champion is None or champion == named["version"]:
        outcome = "first champion" if champion is None else "already champion"
        return Decision(outcome, True, metric, **named)
    old_score = champions[champion]
    if isinstance(old_score, str):
        return Decision("replaced an unloadable champion", True, metric, **named,
                        challenger_score=new_score, champion_version=champion,
                        champion_error=old_score)  # fmt: skip
    wins = new_score > old_score
    return Decision(
        "promoted" if wins else "kept champion", wins, metric, **named,
        challenger_score=new_score, champion_version=champion, champion_score=old_score,
    )  # fmt: skip
