import pytest
import torch

import sasrec.model
from sasrec.model import SASRec, SASRecConfig
from sasrec.serving.recommender import top_unseen


def tiny_model(**overrides) -> SASRec:
    torch.manual_seed(0)
    config = SASRecConfig(
        **{"num_items": 30, "max_len": 8, "hidden_size": 16, "num_heads": 2} | overrides
    )
    return SASRec(config).eval()


@pytest.mark.parametrize("block", ["sasrec", "gated"])
def test_causal_mask_later_items_do_not_change_earlier_outputs(block):
    model = tiny_model(block=block)
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    changed = items.clone()
    changed[0, 6:] = torch.tensor([20, 21])
    before, after = model.encode(items), model.encode(changed)
    torch.testing.assert_close(before[:, :6], after[:, :6])
    assert not torch.allclose(before[:, 6:], after[:, 6:])


@pytest.mark.parametrize("block", ["sasrec", "gated"])
def test_padding_does_not_change_outputs_of_real_items(block):
    model = tiny_model(block=block)
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 0, 0, 0, 3, 4, 5]])
    torch.testing.assert_close(model.encode(short), model.encode(padded)[:, -3:])
    torch.testing.assert_close(model(short), model(padded))


@pytest.mark.parametrize("block", ["sasrec", "gated"])
def test_padding_content_is_ignored(block):
    # A padded row's neighbour in the batch must not leak in either.
    model = tiny_model(block=block)
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


def test_top_unseen_is_the_same_when_a_large_catalogue_splits_the_batch(monkeypatch):
    # A catalogue too large for the whole batch's scores is scored a few users at a time.
    model = tiny_model(num_items=3000)
    generator = torch.Generator().manual_seed(0)
    histories = torch.randint(1, 3001, (13, 6), generator=generator)
    histories[0, :4] = 0  # left padding
    whole = top_unseen(model, histories, 10, torch.device("cpu"))
    monkeypatch.setattr(sasrec.model, "MAX_SCORES", 4 * 3001)  # 4 users per batch
    assert sasrec.model.users_per_batch(13, 3000) == 4
    split = top_unseen(model, histories, 10, torch.device("cpu"))
    assert torch.equal(split[0], whole[0])  # the same items
    torch.testing.assert_close(split[1], whole[1])  # other batch shapes round differently
    seen = [set(row.tolist()) for row in histories]
    assert all(not seen[row] & set(whole[0][row].tolist()) for row in range(13))


def test_a_gated_block_with_closed_gates_passes_its_input_through():
    model = tiny_model(block="gated")
    items = torch.tensor([[0, 3, 4, 5, 6, 7, 8, 9]])
    open_gates = model.encode(items)
    for block in model.blocks:  # sigmoid(-1e4) = 0: neither branch adds anything
        for gate in (block.gate_attn, block.gate_ffn):
            torch.nn.init.zeros_(gate.weight)
            torch.nn.init.constant_(gate.bias, -1e4)
    closed = model.encode(items)
    embedded = model.item_emb(items) * 16**0.5 + model.pos_emb(torch.arange(7, -1, -1))
    torch.testing.assert_close(closed[:, 1:], model.ln_out(embedded)[:, 1:])
    assert not torch.allclose(open_gates, closed)


def test_untied_scores_use_the_output_half_of_the_item_rows_and_encode_the_input_half():
    model = tiny_model(tied=False)
    assert model.item_emb.weight.shape == (31, 32)
    items = torch.tensor([[0, 0, 3, 4, 5]])
    before = model(items)
    with torch.no_grad():
        model.item_emb.weight[:, 16:] = 0.0  # output half: every score is its item's bias
    torch.testing.assert_close(model(items), model.item_bias.expand(1, -1))
    with torch.no_grad():
        model.item_emb.weight[:, 16:] = torch.randn(31, 16)
    assert not torch.allclose(model(items), before)
    # What the encoder reads is the input half only: the output half changed nothing there.
    hidden = model.encode(items)[:, -1]
    weight = model.item_emb.weight[:, 16:]
    torch.testing.assert_close(model(items), hidden @ weight.T + model.item_bias)
