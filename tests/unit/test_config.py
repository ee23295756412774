import re

import pytest

from sasrec.config import HParams, parse_hparams
from sasrec.errors import SASRecError


def test_defaults_are_the_papers_amazon_settings():
    hparams = parse_hparams(None)
    assert hparams == HParams()
    assert (hparams.max_len, hparams.hidden_size, hparams.num_blocks, hparams.num_heads) == (
        50,
        50,
        2,
        1,
    )
    assert (hparams.dropout, hparams.lr, hparams.batch_size, hparams.loss) == (
        0.5,
        0.001,
        128,
        "bce",
    )


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
        ('{"dropout": 1.0}', "dropout=1.0 must be in [0, 1)"),
        ('{"hidden_size": 50, "num_heads": 3}', "divisible by num_heads=3"),
        ('{"loss": "hinge"}', "loss='hinge' is not one of"),
        ('{"device": "tpu"}', "device='tpu' is not one of"),
        ('{"batch_size": 0}', "batch_size=0 must be at least 1"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
    ],
)
def test_bad_hparams_name_the_problem(overrides, message):
    with pytest.raises(SASRecError, match=re.escape(message)):
        parse_hparams(overrides)
