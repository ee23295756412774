"""SASRec (Kang & McAuley, ICDM 2018): a causal self-attention encoder over item sequences.

Sequences are left-padded with item 0. Positions are counted from the most recent item, so
trimming a batch's leading padding changes nothing. The score of an item is the dot product
of the final hidden state with the item's input embedding (shared weights, as in the paper;
`tied=False` gives each item an output embedding of its own) plus a learned per-item bias,
which the paper lacks: it holds the item's overall popularity, so the embeddings need not
(docs/benchmarks.md measures what it changes).
`sasrec.training.data_defaults.log_popularity` is where it starts: the log training counts.

A trained model can also carry the training sequences' item-to-item transitions: the
softmax of its scores is then a mixture, (1 - w) * the model's + w * P(next | last item),
with w chosen on the validation users (`sasrec.training.transition_mix`).
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PAD = 0


@dataclass(frozen=True)
class SASRecConfig:
    """Model shape; `num_items` excludes the padding index 0."""

    num_items: int
    max_len: int = 50
    hidden_size: int = 50
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.5
    block: str = "sasrec"  # "sasrec": the paper's (pre-norm); "gated": LiGR's gated residuals
    tied: bool = True  # score items with their input embeddings (the paper); False: own ones
    num_transitions: int = 0  # item-to-item transitions mixed into the scores; 0: none


def row_entries(row_starts: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each of `rows` (B,) keeps its entries in a CSR matrix with these `row_starts`.

    Returns:
        (owners, positions), both (T_B,): entry `positions[i]` of the matrix belongs to
        `rows[owners[i]]`; owners ascend. On the device of `row_starts`.
    """
    starts = row_starts[rows]  # (B,)
    lengths = row_starts[rows + 1] - starts  # (B,)
    owners = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), lengths)
    first_of_owner = lengths.cumsum(0) - lengths  # (B,) each row's first place in T_B
    positions = torch.arange(len(owners), device=rows.device) - first_of_owner[owners]
    return owners, positions + starts[owners]


class Dropout(nn.Dropout):
    """nn.Dropout with a mask from `torch.rand` on CPU, where it is ~3x faster than bernoulli_."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zero each element with probability p and scale the rest by 1 / (1 - p)."""
        if not self.training or self.p == 0.0 or x.is_cuda:
            return super().forward(x)
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))


class SelfAttention(nn.Module):
    """Multi-head self-attention through `F.scaled_dot_product_attention`."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D); allowed: (B, 1, L, L) bool, True where a query may see a key."""
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).split(hidden, dim=2)
        # (B, L, D) -> (B, H, L, D/H)
        q, k, v = (t.view(batch, length, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(batch, length, hidden))


class FeedForward(nn.Module):
    """The paper's point-wise two-layer feed-forward network."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.hidden_size)
        self.fc2 = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) -> (B, L, D)."""
        return self.dropout(self.fc2(self.dropout(F.relu(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block; dropout on attention weights and in the feed-forward net."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.hidden_size)
        self.attn = SelfAttention(config)
        self.ln_ffn = nn.LayerNorm(config.hidden_size)
        self.ffn = FeedForward(config)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) -> (B, L, D)."""
        x = x + self.attn(self.ln_attn(x), allowed)
        return x + self.ffn(self.ln_ffn(x))


class GatedFeedForward(nn.Module):
    """SwiGLU feed-forward (Shazeer 2020) of width 2 * hidden: silu(x W1) * (x W2), then W3."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        width = 2 * config.hidden_size
        self.fc_in = nn.Linear(config.hidden_size, 2 * width)
        self.fc_out = nn.Linear(width, config.hidden_size)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) -> (B, L, D)."""
        value, gate = self.fc_in(x).chunk(2, dim=-1)  # (B, L, 2D) each
        return self.dropout(self.fc_out(self.dropout(F.silu(gate) * value)))


class GatedBlock(nn.Module):
    """LiGR's block (Govind et al. 2025, the layer of eSASRec, Tikhonov et al. RecSys 2025).

    Pre-norm, and each residual branch scaled per unit by a sigmoid gate computed from the
    branch's normalised input, so a block can pass its input through unchanged.
    """

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.ln_attn = nn.LayerNorm(config.hidden_size)
        self.attn = SelfAttention(config)
        self.gate_attn = nn.Linear(config.hidden_size, config.hidden_size)
        self.ln_ffn = nn.LayerNorm(config.hidden_size)
        self.ffn = GatedFeedForward(config)
        self.gate_ffn = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) -> (B, L, D)."""
        normed = self.ln_attn(x)
        x = x + torch.sigmoid(self.gate_attn(normed)) * self.attn(normed, allowed)
        normed = self.ln_ffn(x)
        return x + torch.sigmoid(self.gate_ffn(normed)) * self.ffn(normed)


BLOCKS = {"sasrec": Block, "gated": GatedBlock}


class SASRec(nn.Module):
    """Self-attentive sequential recommender."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        # Untied, an item's output embedding is the second half of its row: one table, so
        # row-wise training (sasrec.training.item_rows) gathers and updates both at once.
        width = config.hidden_size * (1 if config.tied else 2)
        self.item_emb = nn.Embedding(config.num_items + 1, width, padding_idx=PAD)
        self.item_bias = nn.Parameter(torch.zeros(config.num_items + 1))
        self.pos_emb = nn.Embedding(config.max_len, config.hidden_size)
        self.emb_dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(BLOCKS[config.block](config) for _ in range(config.num_blocks))
        self.ln_out = nn.LayerNorm(config.hidden_size)
        self.apply(self._init_weights)
        if config.num_transitions:  # `sasrec.transitions.Transitions`, as probabilities
            self.register_buffer(
                "transition_starts", torch.zeros(config.num_items + 2, dtype=torch.int64)
            )
            self.register_buffer(
                "transition_items", torch.zeros(config.num_transitions, dtype=torch.int64)
            )
            self.register_buffer("transition_log_probs", torch.zeros(config.num_transitions))
            self.register_buffer("transition_weight", torch.tensor(0.0))  # w, in [0, 1)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.xavier_uniform_(module.weight)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()

    def input_part(self, rows: torch.Tensor) -> torch.Tensor:
        """(..., W) rows of the item table -> (..., D): what the encoder reads of an item."""
        return rows[..., : self.config.hidden_size]

    def output_part(self, rows: torch.Tensor) -> torch.Tensor:
        """(..., W) rows of the item table -> (..., D): what an item's score is taken with."""
        return rows[..., -self.config.hidden_size :]

    def encode(
        self, item_ids: torch.Tensor, item_vectors: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Hidden state after each position: item_ids (B, L) -> (B, L, D).

        The state at position t depends only on items at positions <= t. `item_vectors`
        (B, L, W), when given, are `item_emb(item_ids)` looked up by the caller.
        """
        length = item_ids.shape[1]
        if length > self.config.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.config.max_len}")
        if item_vectors is None:
            item_vectors = self.item_emb(item_ids)
        item_vectors = self.input_part(item_vectors)
        is_item = item_ids != PAD  # (B, L)
        # Distance from the most recent position: length-1 ... 0.
        positions = torch.arange(length - 1, -1, -1, device=item_ids.device)
        x = item_vectors * math.sqrt(self.config.hidden_size) + self.pos_emb(positions)
        x = self.emb_dropout(x) * is_item.unsqueeze(-1)
        causal = torch.ones(length, length, dtype=torch.bool, device=item_ids.device).tril()
        # Queries see earlier real items; every position sees itself so no row is empty.
        diagonal = torch.eye(length, dtype=torch.bool, device=item_ids.device)
        allowed = (causal & (is_item.unsqueeze(1) | diagonal)).unsqueeze(1)  # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, allowed) * is_item.unsqueeze(-1)
        return self.ln_out(x)

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Scores of every item as the next one: item_ids (B, L) -> (B, num_items + 1).

        Column 0 is padding; callers mask it. Training objectives are in `sasrec.training.losses`.
        """
        last_hidden = self.encode(item_ids)[:, -1, :]  # (B, D)
        # One fused pass over the output, the largest tensor of scoring. On CPU it is laid
        # out items x users: with d this small MKL computes that product ~2x faster, and
        # callers reduce along either dimension of the (B, N + 1) view alike.
        weight = self.output_part(self.item_emb.weight)  # (N + 1, D)
        if last_hidden.is_cuda:
            scores = torch.addmm(self.item_bias, last_hidden, weight.T)
        else:
            scores = torch.addmm(self.item_bias.unsqueeze(1), weight, last_hidden.T).T
        if self.config.num_transitions:
            scores = self.mix_transitions(scores, item_ids[:, -1])
        return scores

    def mix_transitions(self, scores: torch.Tensor, last_items: torch.Tensor) -> torch.Tensor:
        """Mix P(next | last item) into `scores` (B, N + 1), in place, at weight w.

        Afterwards a row's softmax over items 1..N is (1 - w) * its softmax before
        + w * P(next | the row's last item), exactly; a row whose last item nothing ever
        followed keeps its own. Only the row's transitions are written: their exp grows by
        w / (1 - w) * P * (the row's softmax normaliser), which divides the normaliser by
        1 - w and leaves every other item's score as it was.
        """
        weight = self.transition_weight
        log_norm = log_normaliser(scores)  # (B,)
        users, positions = row_entries(self.transition_starts, last_items)
        items = self.transition_items[positions]
        added = self.transition_log_probs[positions] + log_norm[users]
        added += weight.log() - torch.log1p(-weight)
        scores[users, items] = torch.logaddexp(scores[users, items], added)
        return scores


NORMALISER_CHUNK = 2048  # items per chunk of `log_normaliser`


def log_normaliser(scores: torch.Tensor) -> torch.Tensor:
    """(B, N + 1) scores -> (B,) the log of each row's softmax normaliser over items 1..N.

    `torch.logsumexp` writes a temporary as large as `scores`; taken chunk by chunk of
    items, it stays in cache: 2.2x faster on CPU for 256 users x 25.6K items. Chunks of
    items are contiguous there, where the scores are laid out items x users
    (`SASRec.forward`).
    """
    by_item = scores.T[1:]  # (N, B)
    maxima = by_item.amax(dim=0)  # (B,)
    total = torch.zeros_like(maxima)
    for chunk in by_item.split(NORMALISER_CHUNK):
        total += (chunk - maxima).exp_().sum(dim=0)
    return total.log_() + maxima


def load_sasrec(config_file: Path, weights_file: Path, device: torch.device) -> SASRec:
    """A model from its config.json and state dict, read without unpickling objects (eval mode)."""
    model = SASRec(SASRecConfig(**json.loads(config_file.read_text())))
    model.load_state_dict(torch.load(weights_file, map_location=device, weights_only=True))
    return model.to(device).eval()


MAX_SCORES = 2**27  # scores held at once when ranking: 512 MiB in float32


def users_per_batch(requested: int, num_items: int) -> int:
    """At most `requested` users, fewer where their (users x items) scores pass MAX_SCORES.

    256 users of a 25.6K-item catalogue hold 6.6M scores; 256 of Books' 4.4M items would
    hold 1.1G (4.5 GB), so such a catalogue is scored 30 users at a time.
    """
    return max(1, min(requested, MAX_SCORES // (num_items + 1)))


def exclude_items(scores: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
    """Set the scores of padding and of each row's history items to -inf, in place.

    Args:
        scores: (B, N + 1) scores of every item.
        history: (B, S) items to exclude, 0-padded; None to exclude only padding.
    """
    scores[:, PAD] = float("-inf")
    if history is not None:
        scores.scatter_(1, history, float("-inf"))
    return scores
