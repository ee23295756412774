"""The training transitions mixed into the model's scores, and the weight chosen on validation."""

import json

import polars as pl
import pytest
import torch

from sasrec.config import HParams
from sasrec.data import schema
from sasrec.model import SASRec, SASRecConfig, log_normaliser, row_entries
from sasrec.model_dir import load_model_dir, save_model_dir
from sasrec.training.state import checkpoint_identity
from sasrec.training.train import validate
from sasrec.training.transition_mix import choose_transition_weight, with_transitions
from sasrec.transitions import Transitions

NUM_ITEMS = 5


def sequences(*items: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        {schema.USER_ID: [f"u{i}" for i in range(len(items))], schema.ITEM_SEQUENCE: items},
        schema={schema.USER_ID: pl.String, schema.ITEM_SEQUENCE: pl.List(pl.Int64)},
    )


# Item 1 was followed by 2 twice and by 3 once; 2 by 3 once; 3 by 1 once; 4 and 5 by nothing.
TRAIN = sequences([1, 2, 3], [1, 2], [3, 1, 3], [4])
# The same as a dense (N + 1, N + 1) matrix of P(column follows row), written by hand.
PROBABILITIES = torch.zeros(NUM_ITEMS + 1, NUM_ITEMS + 1)
PROBABILITIES[1, 2], PROBABILITIES[1, 3] = 2 / 3, 1 / 3
PROBABILITIES[2, 3] = 1.0
PROBABILITIES[3, 1] = 1.0


def tiny_model() -> SASRec:
    torch.manual_seed(0)
    config = SASRecConfig(num_items=NUM_ITEMS, max_len=4, hidden_size=8, dropout=0.0)
    return SASRec(config).eval()


def test_transitions_are_the_counts_of_each_item_pair_in_csr_form():
    transitions = Transitions.of_sequences(TRAIN, NUM_ITEMS)
    assert transitions.row_starts.tolist() == [0, 0, 2, 3, 4, 4, 4]
    assert transitions.next_items.tolist() == [2, 3, 3, 1]
    assert transitions.counts.tolist() == [2.0, 1.0, 1.0, 1.0]
    assert transitions.probabilities().tolist() == pytest.approx([2 / 3, 1 / 3, 1.0, 1.0])


def test_row_entries_finds_each_rows_transitions_and_nothing_for_empty_rows():
    transitions = Transitions.of_sequences(TRAIN, NUM_ITEMS)
    owners, positions = row_entries(transitions.row_starts, torch.tensor([3, 4, 1, 1]))
    assert owners.tolist() == [0, 2, 2, 3, 3]  # row 4 (item 4) has no transitions
    assert transitions.next_items[positions].tolist() == [1, 2, 3, 2, 3]


@pytest.mark.parametrize("weight", [0.3, 0.9])
def test_the_softmax_of_mixed_scores_is_the_mixture_of_both_distributions(weight):
    model = tiny_model()
    histories = torch.tensor([[0, 4, 2, 1], [0, 0, 1, 3], [0, 0, 0, 4], [1, 2, 3, 2]])
    mixed = with_transitions(model, Transitions.of_sequences(TRAIN, NUM_ITEMS), weight)
    with torch.no_grad():
        own = torch.softmax(model(histories)[:, 1:], dim=1)  # (B, N)
        following = PROBABILITIES[histories[:, -1], 1:]  # (B, N)
        expected = (1 - weight) * own + weight * following
        # A last item that nothing followed (item 4, row 2) leaves the model's own.
        expected[2] = own[2]
        scores = mixed(histories)
    torch.testing.assert_close(torch.softmax(scores[:, 1:], dim=1), expected)


def test_a_high_weight_ranks_the_last_items_successors_first_most_frequent_first():
    mixed = with_transitions(tiny_model(), Transitions.of_sequences(TRAIN, NUM_ITEMS), 0.99)
    with torch.no_grad():
        scores = mixed(torch.tensor([[0, 0, 4, 1]]))[0, 1:]
    assert (scores.argsort(descending=True)[:2] + 1).tolist() == [2, 3]


def test_a_mixed_model_saves_and_loads_with_its_transitions(tmp_path):
    sequences_dir = tmp_path / "seq"
    sequences_dir.mkdir()
    mixed = with_transitions(tiny_model(), Transitions.of_sequences(TRAIN, NUM_ITEMS), 0.5)
    popularity = torch.tensor([0.0, 4, 2, 3, 1, 0])
    save_model_dir(mixed, sequences_dir, {"hparams": {}}, tmp_path / "model", popularity)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["num_transitions"] == 4
    loaded = load_model_dir(tmp_path / "model", torch.device("cpu"))
    histories = torch.tensor([[0, 4, 2, 1], [0, 0, 2, 3]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(histories), mixed(histories))
    assert loaded.transition_weight.item() == 0.5


def held_out(rows: list[tuple[list[int], int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            schema.USER_ID: [f"v{i}" for i in range(len(rows))],
            schema.HISTORY: [history for history, _ in rows],
            schema.TARGET: [target for _, target in rows],
        },
        schema=schema.HELD_OUT_SCHEMA,
    )


def test_the_weight_is_chosen_where_validation_is_best_and_zero_keeps_the_model():
    model = tiny_model()
    transitions = Transitions.of_sequences(TRAIN, NUM_ITEMS)
    # Every validation target is its last item's only successor: the counts are right.
    followed = held_out([([4, 2], 3), ([5, 3], 1), ([5, 2], 3), ([2, 3], 1)])
    kept, weight, metrics = choose_transition_weight(
        model, transitions, lambda m: validate(m, followed)
    )
    assert weight > 0 and kept is not model
    assert metrics["val_ndcg@10"] == pytest.approx(1.0)  # each target ranked first
    # No target ever followed its last item: mixing can only push it down.
    never = held_out([([4, 1], 5), ([2, 3], 4), ([3, 1], 5)])
    alone = validate(model, never)["val_ndcg@10"]
    kept, weight, metrics = choose_transition_weight(
        model, transitions, lambda m: validate(m, never)
    )
    assert (kept, weight) == (model, 0.0)
    assert metrics["val_ndcg@10"] == alone


def test_a_checkpoint_resumes_whatever_the_transition_weight_since_it_acts_after_training():
    identity = checkpoint_identity(HParams(), "data")
    assert checkpoint_identity(HParams(transition_weight=0.0), "data") == identity
    assert checkpoint_identity(HParams(transition_weight=0.5), "data") == identity
    assert checkpoint_identity(HParams(tied_embeddings=False), "data") != identity


@pytest.mark.parametrize("items_first", [True, False])
def test_the_normaliser_taken_chunk_by_chunk_is_logsumexp_over_the_items(items_first):
    torch.manual_seed(0)
    scores = torch.randn(5000, 7) * 30 if items_first else torch.randn(7, 5000) * 30
    scores = scores.T if items_first else scores  # (7, 5000) either way, laid out both ways
    expected = torch.logsumexp(scores[:, 1:], dim=1)
    torch.testing.assert_close(log_normaliser(scores), expected)
