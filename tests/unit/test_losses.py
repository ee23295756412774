import math

import pytest
import torch

from sasrec.model import SASRec, SASRecConfig
from sasrec.training.losses import (
    IGNORED,
    MAX_CE_LOGITS,
    ChunkedSoftmaxLoss,
    NextItemObjective,
    full_softmax_loss,
    gbce_beta,
    sample_negatives,
)

ITEMS = torch.tensor([[0, 1, 2]])
POSITIVES = torch.tensor([[1, 2, 3]])  # the first position has a padding input: not a target


def tiny_model() -> SASRec:
    torch.manual_seed(0)
    config = SASRecConfig(num_items=12, max_len=8, hidden_size=8, num_heads=2, dropout=0.0)
    model = SASRec(config).eval()
    with torch.no_grad():
        model.item_bias.normal_()  # trained models have one; zeros would hide a missing term
    return model


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def hand_logits(model: SASRec) -> list[dict[int, float]]:
    """Per target position (inputs 1 and 2): its state . each item's embedding + item bias."""
    hidden = model.encode(ITEMS)[0].tolist()
    emb, bias = model.item_emb.weight.tolist(), model.item_bias.tolist()
    return [
        {
            item: sum(h * e for h, e in zip(hidden[pos], emb[item], strict=True)) + bias[item]
            for item in range(13)
        }
        for pos in (1, 2)
    ]


def test_bce_is_the_papers_loss_by_hand():
    model = tiny_model()
    negatives = torch.tensor([[[9], [10], [11]]])  # per position
    logits = hand_logits(model)
    pos = [logits[0][2], logits[1][3]]
    neg = [logits[0][10], logits[1][11]]
    expected = (
        -sum(math.log(sigmoid(x)) for x in pos) / 2 - sum(math.log(1 - sigmoid(x)) for x in neg) / 2
    )
    loss = NextItemObjective(model, "bce")(ITEMS, POSITIVES, negatives)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_sampled_softmax_by_hand_with_the_positive_masked_among_negatives():
    model = tiny_model()
    negatives = torch.tensor([5, 3, 7])  # shared; 3 is the second target's positive: masked
    logits = hand_logits(model)
    first = math.log(sum(math.exp(logits[0][i]) for i in (2, 5, 3, 7))) - logits[0][2]
    second = math.log(sum(math.exp(logits[1][i]) for i in (3, 5, 7))) - logits[1][3]
    loss = NextItemObjective(model, "sampled_softmax")(ITEMS, POSITIVES, negatives)
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-5)


def test_sampled_softmax_gradients_stay_finite_when_every_negative_is_the_positive():
    model = tiny_model()
    negatives = torch.tensor([3])  # the second target's positive: its row has no negative left
    loss = NextItemObjective(model, "sampled_softmax")(ITEMS, POSITIVES, negatives)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    logits = hand_logits(model)
    first = math.log(sum(math.exp(logits[0][i]) for i in (2, 3))) - logits[0][2]
    assert loss.item() == pytest.approx(first / 2, rel=1e-5)  # the second target's loss is 0


@pytest.mark.parametrize("max_logits", [MAX_CE_LOGITS, 3 * 5, 3 * 13])  # chunks of 5 or 13
def test_full_softmax_by_hand_excludes_padding(max_logits):
    model = tiny_model()
    logits = hand_logits(model)
    per_target = [
        math.log(sum(math.exp(row[i]) for i in range(1, 13))) - row[target]
        for row, target in zip(logits, (2, 3), strict=True)
    ]
    objective = NextItemObjective(model, "ce", max_logits=max_logits)
    loss = objective(ITEMS, POSITIVES, torch.empty(0, dtype=torch.long))
    assert loss.item() == pytest.approx(sum(per_target) / 2, rel=1e-5)


@pytest.mark.parametrize("chunk", [1, 7, 128, 1001, 5000])
def test_chunked_softmax_loss_has_the_full_losss_value_and_gradients(chunk):
    generator = torch.Generator().manual_seed(chunk)
    num_targets, num_items = 37, 1000
    hidden = torch.randn(num_targets, 16, generator=generator, requires_grad=True)
    weight = torch.randn(num_items + 1, 16, generator=generator, requires_grad=True)
    bias = torch.randn(num_items + 1, generator=generator, requires_grad=True)
    targets = torch.randint(1, num_items + 1, (num_targets,), generator=generator)
    targets[::5] = IGNORED
    targets[1] = num_items  # the last item, in the last chunk
    inputs = (hidden, weight, bias)
    full = full_softmax_loss(hidden @ weight.T + bias, targets)
    chunked = ChunkedSoftmaxLoss.apply(hidden, weight, bias, targets, chunk)
    assert chunked.item() == pytest.approx(full.item(), rel=1e-6)
    for ours, theirs in zip(
        torch.autograd.grad(3.0 * chunked, inputs),
        torch.autograd.grad(3.0 * full, inputs),
        strict=True,
    ):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)  # float32 sums


def test_ce_chunks_its_logits_past_the_limit_and_trains_alike():
    # A model trained a few steps either way ends with the same weights.
    weights = []
    for max_logits in (MAX_CE_LOGITS, 40):
        model = tiny_model().train()
        objective = NextItemObjective(model, "ce", max_logits=max_logits)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(5):
            optimizer.zero_grad()
            objective(ITEMS, POSITIVES, torch.empty(0, dtype=torch.long)).backward()
            optimizer.step()
        weights.append(model.item_emb.weight.detach())
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-4, atol=1e-5)


def test_gbce_by_hand():
    model = tiny_model()
    negatives = torch.tensor([[[1, 1], [5, 7], [6, 3]]])  # per position; 3 clashes: masked
    beta = 0.4
    logits = hand_logits(model)
    per_target = [
        -math.log(sigmoid(row[target]) ** beta) - sum(math.log(1 - sigmoid(row[n])) for n in negs)
        for row, target, negs in zip(logits, (2, 3), ((5, 7), (6,)), strict=True)
    ]
    loss = NextItemObjective(model, "gbce", gbce_beta=beta)(ITEMS, POSITIVES, negatives)
    # Mean over targets of the sum over 1 + N terms, divided by 1 + N as gSASRec's mean does.
    assert loss.item() == pytest.approx(sum(per_target) / 2 / 3, rel=1e-5)


def test_gbce_beta_limits():
    # t = 0 gives plain BCE (beta 1); t = 1, full calibration, gives the sampling rate alpha.
    assert gbce_beta(256, 1001, 0.0) == pytest.approx(1.0)
    assert gbce_beta(256, 1001, 1.0) == pytest.approx(256 / 1000)
    assert gbce_beta(256, 1001, 0.75) == pytest.approx(
        0.256 * (0.75 * (1 - 1000 / 256) + 1000 / 256)
    )


def test_negative_shapes_and_range():
    generator = torch.Generator().manual_seed(0)
    per_position = sample_negatives("bce", 2, torch.Size([4, 5]), 9, generator)
    shared = sample_negatives("sampled_softmax", 300, torch.Size([4, 5]), 9, generator)
    assert per_position.shape == (4, 5, 2) and shared.shape == (300,)
    assert sample_negatives("gbce", 2, torch.Size([4, 5]), 9, generator).shape == (4, 5, 2)
    assert shared.min() == 1 and shared.max() == 9
    assert sample_negatives("ce", 5, torch.Size([4, 5]), 9, generator).numel() == 0


@pytest.mark.parametrize("loss", ["bce", "sampled_softmax", "ce", "gbce"])
def test_each_loss_overfits_one_batch(loss):
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=30, max_len=8, hidden_size=16, dropout=0.0)).train()
    items = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [0, 0, 10, 11, 12, 13, 14]])
    positives = torch.tensor([[2, 3, 4, 5, 6, 7, 8], [0, 0, 11, 12, 13, 14, 15]])
    objective = NextItemObjective(model, loss, gbce_beta=gbce_beta(8, 30, 0.75))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        negatives = sample_negatives(loss, 8, positives.shape, 30, generator)
        value = objective(items, positives, negatives)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    # Ranked as evaluation does: items already in the history are excluded.
    scores = model.eval()(items).scatter(1, items, float("-inf"))
    scores[:, 0] = float("-inf")
    assert scores.argmax(1).tolist() == [8, 15]
