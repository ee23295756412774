import torch

from sasrec.model import SASRec, SASRecConfig


def tiny_model(**overrides) -> SASRec:
    torch.manual_seed(0)
    config = SASRecConfig(
        **{"num_items": 30, "max_len": 8, "hidden_size": 16, "num_heads": 2} | overrides
    )
    return SASRec(config).eval()


def test_causal_mask_later_items_do_not_change_earlier_outputs():
    model = tiny_model()
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    changed = items.clone()
    changed[0, 6:] = torch.tensor([20, 21])
    before, after = model.encode(items), model.encode(changed)
    torch.testing.assert_close(before[:, :6], after[:, :6])
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def test_padding_does_not_change_outputs_of_real_items():
    model = tiny_model()
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]])
    torch.testing.assert_close(model.encode(short), model.encode(padded)[:, -3:])
    torch.testing.assert_close(model.score_all_items(short), model.score_all_items(padded))


def test_padding_content_is_ignored():
    # A padded row's neighbour in the batch must not leak in either.
    model = tiny_model()
    batch = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8]])
    alone = model.score_all_items(batch[:1])
    torch.testing.assert_close(model.score_all_items(batch)[:1], alone)


def test_scores_cover_the_catalogue_with_shared_embeddings():
    model = tiny_model()
    items = torch.tensor([[1, 2, 3]])
    scores = model.score_all_items(items)
    assert scores.shape == (1, 31)
    hidden = model.encode(items)[:, -1]
    torch.testing.assert_close(scores[0, 7], hidden[0] @ model.item_emb.weight[7])


def test_bce_loss_matches_hand_computation_and_skips_padding():
    model = tiny_model(dropout=0.0)
    items = torch.tensor([[0, 1, 2]])
    positives = torch.tensor([[1, 2, 3]])  # the first position has a padding input: ignored
    negatives = torch.tensor([[[9], [10], [11]]])
    hidden = model.encode(items)[0]
    emb = model.item_emb.weight
    pos = torch.stack([hidden[1] @ emb[2], hidden[2] @ emb[3]])
    neg = torch.stack([hidden[1] @ emb[10], hidden[2] @ emb[11]])
    expected = -torch.log(torch.sigmoid(pos)).mean() - torch.log(1 - torch.sigmoid(neg)).mean()
    torch.testing.assert_close(model(items, positives, negatives), expected)


def test_overfits_one_batch():
    model = tiny_model(dropout=0.0).train()
    items = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [0, 0, 10, 11, 12, 13, 14]])
    positives = torch.tensor([[2, 3, 4, 5, 6, 7, 8], [0, 0, 11, 12, 13, 14, 15]])
    negatives = torch.tensor([[[20], [21], [22], [23], [24], [25], [26]]] * 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    first = model(items, positives, negatives).item()
    for _ in range(200):
        loss = model(items, positives, negatives)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.01 < first
    # Ranked as evaluation does: items already in the history are excluded.
    scores = model.eval().score_all_items(items).scatter(1, items, float("-inf"))
    assert scores.argmax(1).tolist() == [8, 15]
