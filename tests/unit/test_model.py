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
    torch.testing.assert_close(model(short), model(padded))


def test_padding_content_is_ignored():
    # A padded row's neighbour in the batch must not leak in either.
    model = tiny_model()
    batch = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8]])
    alone = model(batch[:1])
    torch.testing.assert_close(model(batch)[:1], alone)


def test_scores_cover_the_catalogue_with_shared_embeddings():
    model = tiny_model()
    items = torch.tensor([[1, 2, 3]])
    scores = model(items)
    assert scores.shape == (1, 31)
    hidden = model.encode(items)[:, -1]
    with torch.no_grad():
        model.item_bias[7] = 0.5
    scores = model(items)
    torch.testing.assert_close(scores[0, 7], hidden[0] @ model.item_emb.weight[7] + 0.5)
