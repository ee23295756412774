"""Row-wise item-table updates: what they leave alone, and where they equal the dense ones."""

import pytest
import torch

from sasrec.config import parse_hparams
from sasrec.inputs import read_sequences
from sasrec.model import SASRec, SASRecConfig
from sasrec.training.item_rows import RowAdam, SparseItemTable
from sasrec.training.losses import NextItemObjective
from sasrec.training.state import WeightAverage
from sasrec.training.train import fit, start_training_on

HPARAMS = {"max_epochs": 3, "eval_every": 1, "hidden_size": 16, "batch_size": 16, "patience": 9}


def test_a_step_changes_only_the_rows_its_batch_uses():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=1000, max_len=6, hidden_size=8, dropout=0.0))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    table = SparseItemTable(model, lr=0.01, average=None)
    inputs = torch.tensor([[0, 3, 5, 7], [9, 11, 3, 5]])
    positives = torch.tensor([[3, 5, 7, 8], [11, 3, 5, 2]])
    negatives = torch.tensor([100, 200, 300])
    rows, batch = table.gather(inputs, positives, negatives)
    assert rows.items.tolist() == [0, 2, 3, 5, 7, 8, 9, 11, 100, 200, 300]
    assert torch.equal(rows.items[batch[0]], inputs)  # the ids number the rows
    loss = NextItemObjective(model, "sampled_softmax")(*batch, rows.weight, rows.bias)
    loss.backward()
    table.step(rows)
    used = torch.zeros(1001, dtype=torch.bool)
    used[rows.items[1:]] = True
    grads = (rows.weight.grad, rows.bias.grad)
    for index, (name, grad) in enumerate(zip(SparseItemTable.PARAMETERS, grads, strict=True)):
        after = model.get_parameter(name).detach()
        assert torch.equal(after[~used], before[name][~used]), name  # padding too
        # Every used row with a gradient moves: all embeddings; the biases of targets and
        # negatives (an item seen only as an input, 9, has no bias gradient).
        stepped = nonzero_rows(grad[1:])
        assert stepped.sum() == (10 if name == "item_emb.weight" else 9)
        assert torch.equal(nonzero_rows(after[used] - before[name][used]), stepped), name
        moments = table.optimizer.exp_avg[index]
        assert not moments[~used].any() and torch.equal(nonzero_rows(moments[used]), stepped)


def nonzero_rows(tensor: torch.Tensor) -> torch.Tensor:
    return (tensor != 0).reshape(len(tensor), -1).any(1)


def test_the_lazy_average_of_rows_equals_the_average_updated_every_step():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=50, max_len=4, hidden_size=4, dropout=0.0))
    lazy, dense = WeightAverage(model, 0.9), WeightAverage(model, 0.9)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for step in range(60):
            items = torch.randperm(51, generator=generator)[:5].sort().values
            lazy.catch_up(model, items)  # before the step, as SparseItemTable.step does
            model.item_emb.weight[items] += torch.randn(5, 4, generator=generator)
            model.item_bias[items] += torch.randn(5, generator=generator)
            model.pos_emb.weight.add_(torch.randn(4, 4, generator=generator))
            lazy.update_parameters(model, items)
            dense.update_parameters(model)
            if step == 30:  # a checkpoint's round trip on the way
                restored = WeightAverage(model, 0.9)
                restored.load_state_dict(lazy.state_dict())
                lazy = restored
    lazy.catch_up(model)
    for name, averaged in dense.module.named_parameters():
        torch.testing.assert_close(
            lazy.module.get_parameter(name), averaged, rtol=1e-5, atol=1e-5, msg=name
        )
    assert not torch.allclose(dense.module.item_bias, model.item_bias)  # an average, not a copy


@pytest.mark.parametrize(
    ("num_negatives", "ema_decay", "tolerance"),
    [
        (1024, 0.0, 1e-4),  # every item in every batch: row-wise Adam is Adam
        (1024, 0.99, 1e-4),
        (4, 0.0, 1e-4),  # most rows skip most steps: their missed steps are caught up
        # The weight average of a row that drifts on its momentum between uses is caught
        # up as if it had stood still at its new place: 1% of the scores' scale.
        (4, 0.99, 2e-2),
    ],
)
@pytest.mark.parametrize("tied", [True, False])
def test_row_updates_train_the_model_of_dense_updates(
    sequences_dir, num_negatives, ema_decay, tolerance, tied
):
    sequences = read_sequences(sequences_dir)
    models = []
    for sparse in (True, False):
        hparams = parse_hparams(HPARAMS | {
            "dropout": 0.0, "ema_decay": ema_decay, "sparse_item_updates": sparse,
            "num_negatives": num_negatives, "tied_embeddings": tied,
        })  # fmt: skip
        training = start_training_on(sequences, hparams)
        assert (training.state.item_table is not None) == sparse
        fit(training)
        models.append(training.state.model.eval())
    sparse_model, dense_model = models
    for name in SparseItemTable.PARAMETERS:
        torch.testing.assert_close(
            sparse_model.get_parameter(name), dense_model.get_parameter(name),
            rtol=tolerance, atol=tolerance, msg=name,
        )  # fmt: skip
    # Compare what the models compute, not every weight: the key bias of attention has a
    # zero gradient in exact arithmetic, and Adam turns its rounding noise into full steps.
    histories = torch.arange(1, 41).view(8, 5)
    with torch.no_grad():
        torch.testing.assert_close(
            sparse_model(histories), dense_model(histories), rtol=tolerance, atol=tolerance
        )


def test_row_adam_with_its_missed_steps_caught_up_is_adam():
    torch.manual_seed(0)
    start = torch.randn(200, 8)
    dense = torch.nn.Parameter(start.clone())
    adam = torch.optim.Adam([dense], lr=0.01, betas=(0.9, 0.98))
    rows = start.clone()
    row_adam = RowAdam([rows], lr=0.01)
    generator = torch.Generator().manual_seed(1)
    for _ in range(400):  # past the bias corrections' warm-up, and in it
        items = torch.randperm(200, generator=generator)[:20].sort().values
        grad = torch.randn(20, 8, generator=generator)
        dense.grad = torch.zeros(200, 8).index_copy_(0, items, grad)
        adam.step()
        row_adam.step(items, [grad])
    row_adam.catch_up()
    moved = (dense.detach() - start).norm()
    assert (rows - dense.detach()).norm() / moved < 1e-4
