import re

import pytest
import torch

from sasrec.config import HParams, parse_hparams
from sasrec.errors import SASRecError
from sasrec.training.data_defaults import dropout_for_data, with_data_defaults
from sasrec.training.train import learning_rate


def test_defaults_and_the_papers_settings_one_override_away():
    assert parse_hparams(None) == HParams()
    paper = parse_hparams(
        '{"loss": "bce", "num_negatives": 1, "hidden_size": 50, "dropout": 0.5,'
        ' "batch_size": 128, "lr": 0.001, "max_epochs": 200}'
    )
    assert (paper.max_len, paper.num_blocks, paper.num_heads) == (50, 2, 1)
    assert (paper.loss, paper.num_negatives, paper.hidden_size) == ("bce", 1, 50)


def test_booleans_are_booleans():
    assert parse_hparams('{"compile": true}').compile is True
    with pytest.raises(SASRecError, match="compile=1 must be of type bool"):
        parse_hparams('{"compile": 1}')
    with pytest.raises(SASRecError, match="max_epochs=True must be of type int"):
        parse_hparams('{"max_epochs": true}')


def test_overrides_from_json_text_and_dict():
    assert parse_hparams('{"max_epochs": 3, "lr": 0.01}').max_epochs == 3
    assert parse_hparams({"dropout": 0.2}).dropout == 0.2
    assert parse_hparams("").max_epochs == HParams().max_epochs


def test_protobuf_struct_numbers_are_accepted():
    # KFP passes dict parameters through protobuf Struct, where every number is a double.
    hparams = parse_hparams({"num_blocks": 3.0, "lr": 1})
    assert hparams.num_blocks == 3 and isinstance(hparams.num_blocks, int)
    assert hparams.lr == 1.0 and isinstance(hparams.lr, float)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ('{"max_epoch": 3}', "unknown hparams max_epoch"),
        ('{"num_blocks": 1.5}', "num_blocks=1.5 must be of type int"),
        ('{"max_len": "50"}', "max_len='50' must be of type int"),
        ('{"dropout": true}', "dropout=True must be of type float"),
        ('{"dropout": 1.0}', "dropout=1.0 is out of range; allowed: [0.0, 1.0)"),
        ('{"dropout": -0.1}', "dropout=-0.1 is out of range; allowed: [0.0, 1.0)"),
        ('{"ema_decay": 1.0}', "ema_decay=1.0 is out of range; allowed: [0.0, 1.0)"),
        ('{"ema_decay": -0.5}', "ema_decay=-0.5 is out of range"),
        ('{"transition_weight": 1.0}', "transition_weight=1.0 is out of range; allowed: [0.0"),
        ('{"transition_weight": -0.1}', "transition_weight=-0.1 is out of range"),
        ('{"hidden_size": 50, "num_heads": 3}', "divisible by num_heads=3"),
        ('{"loss": "hinge"}', "loss='hinge' is out of range; allowed: bce, sampled_softmax"),
        (
            '{"lr_schedule": "step"}',
            "lr_schedule='step' is out of range; allowed: constant, cosine",
        ),
        ('{"device": "tpu"}', "device='tpu' is out of range; allowed: auto, cpu, cuda"),
        ('{"block": "ligr"}', "block='ligr' is out of range; allowed: sasrec, gated"),
        ('{"batch_size": 0}', "batch_size=0 is out of range; allowed: 1..10000000"),
        ('{"max_epochs": -3}', "max_epochs=-3 is out of range"),
        # Python's json reads these; a learning rate of either would make the weights NaN.
        ('{"lr": Infinity}', "lr=inf is out of range; allowed: [0.0, 1.0]"),
        ('{"lr": NaN}', "lr=nan is out of range"),
        ('{"lr": 0}', "lr=0.0 is out of range; allowed: positive"),
        ('{"lr": 1e9}', "lr=1000000000.0 is out of range"),
        ('{"dropout": NaN}', "dropout=nan is out of range"),
        ('{"gbce_t": -Infinity}', "gbce_t=-inf is out of range"),
        ('{"hidden_size": 10000000}', "hidden_size=10000000 is out of range"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_hparams_name_the_problem(overrides, message):
    with pytest.raises(SASRecError, match=re.escape(message)):
        parse_hparams(overrides)


def test_cosine_schedule_by_hand():
    cosine = parse_hparams({"lr": 0.004, "max_epochs": 4, "lr_schedule": "cosine"})
    # 0.004 * (1 + cos(pi * (epoch - 1) / 4)) / 2 for epochs 1..4
    expected = [0.004, 0.004 * (1 + 2**-0.5) / 2, 0.002, 0.004 * (1 - 2**-0.5) / 2]
    assert [learning_rate(cosine, e) for e in (1, 2, 3, 4)] == pytest.approx(expected)
    constant = parse_hparams({"lr": 0.004, "max_epochs": 4})
    assert [learning_rate(constant, e) for e in (1, 4)] == [0.004, 0.004]


def test_dropout_null_asks_for_the_data_and_other_types_are_refused():
    assert parse_hparams('{"dropout": null}').dropout is None
    assert parse_hparams('{"dropout": 0}').dropout == 0.0
    with pytest.raises(SASRecError, match=re.escape("dropout='0.2' must be of type float")):
        parse_hparams({"dropout": "0.2"})
    with pytest.raises(SASRecError, match="max_epochs=None must be of type int"):
        parse_hparams('{"max_epochs": null}')


def test_dropout_follows_the_training_targets_per_item():
    def dropout(targets_per_item: float) -> float:
        # 100 items; sequences of 11 items give 10 targets each.
        lengths = torch.full((int(targets_per_item * 10),), 11)
        return dropout_for_data(lengths, num_items=100)

    assert dropout(2) == dropout(10) == 0.7  # sparse, as the paper's Games data (7.7)
    assert dropout(30) == dropout(300) == 0.2  # dense, as the bigram chains (30-120)
    middle = [dropout(t) for t in (12, 15, 20, 25)]
    assert middle == sorted(middle, reverse=True) and 0.2 < min(middle) < max(middle) < 0.7
    # Log-linear: the geometric mean of 10 and 30 sits halfway.
    assert dropout_for_data(torch.full((173,), 11), 100) == pytest.approx(0.45, abs=0.01)
    assert dropout_for_data(torch.tensor([1, 1]), 100) == 0.7  # no target at all


def test_validation_spacing_follows_the_batches_per_epoch():
    def eval_every(num_sequences: int, batch_size: int = 256, **fixed: int) -> int:
        hparams = HParams(batch_size=batch_size, **fixed)
        return with_data_defaults(hparams, torch.full((num_sequences,), 3), 100).eval_every

    # The paper's Games data (31,013 users: 122 batches) and the 5-core set (94,800: 371)
    # validate every 5 epochs; 0-core (523,000 users with 2 items or more: 2,043 batches)
    # every epoch; in between, whole epochs of at most 2,048 steps.
    assert eval_every(31_013) == eval_every(94_800) == eval_every(10) == 5
    assert eval_every(523_000) == eval_every(5_000_000) == 1
    assert eval_every(150_000) == 3  # 586 batches: 1,758 steps
    assert eval_every(150_000, batch_size=64) == 1  # the same users in 2,344 batches
    assert eval_every(523_000, eval_every=7) == 7  # a value given is kept
    with pytest.raises(SASRecError, match="eval_every=0 is out of range"):
        parse_hparams('{"eval_every": 0}')
