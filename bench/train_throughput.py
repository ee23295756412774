"""Training throughput (sequences per second) of `sasrec.training.train` against a plain reference.

The reference is the common PyTorch port of SASRec (pmixer/SASRec.pytorch style, rewritten
here): absolute positions, `nn.MultiheadAttention`, Conv1d feed-forward, every sequence
padded to max_len, and each batch built in Python per user with negatives drawn one by one
until they miss the user's items. Both train at the paper's Games settings (max_len 50,
hidden 50, 2 blocks, 1 head, batch 128, BCE, one negative) on the same sequences, in
this process, on the same device. Run from the repository root:

    .venv/bin/python bench/train_throughput.py                       # Video.txt, CPU
    .venv/bin/python bench/train_throughput.py --device cuda --synthetic-users 95000 \
        --synthetic-items 25600 --hparams '{"loss": "ce", "hidden_size": 64}' --skip-reference

Prints Markdown table rows for docs/benchmarks.md.
"""

import argparse
import random
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from machine import describe_machine
from paper_data import VIDEO_TXT, video_sequences
from sasrec.config import parse_hparams
from sasrec.data import schema
from sasrec.model import SASRec
from sasrec.training.data_defaults import with_data_defaults
from sasrec.training.losses import NextItemObjective, gbce_beta
from sasrec.training.train import model_config, train_epoch, training_tensors

# The paper's Games settings, which the reference implements.
PAPER_GAMES = (
    '{"loss": "bce", "num_negatives": 1, "hidden_size": 50, "dropout": 0.5, '
    '"batch_size": 128, "lr": 0.001}'
)


class ReferenceSASRec(nn.Module):
    """The plain port: nn.MultiheadAttention with query-only layer norm, Conv1d FFN."""

    def __init__(self, num_items: int, max_len: int, hidden: int, blocks: int, dropout: float):
        super().__init__()
        self.item_emb = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.emb_dropout = nn.Dropout(dropout)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(blocks))
        self.attns = nn.ModuleList(
            nn.MultiheadAttention(hidden, 1, dropout=dropout) for _ in range(blocks)
        )
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(blocks))
        self.ffns = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(hidden, hidden, 1),
                nn.Dropout(dropout),
                nn.ReLU(),
                nn.Conv1d(hidden, hidden, 1),
                nn.Dropout(dropout),
            )
            for _ in range(blocks)
        )
        self.last_norm = nn.LayerNorm(hidden)

    def hidden(self, seqs: torch.Tensor) -> torch.Tensor:
        """seqs: (B, L) -> (B, L, D)."""
        length = seqs.shape[1]
        x = self.item_emb(seqs) * self.item_emb.embedding_dim**0.5
        x = x + self.pos_emb(torch.arange(length, device=seqs.device))
        keep = (seqs != 0).unsqueeze(-1)
        x = self.emb_dropout(x) * keep
        blocked = ~torch.ones(length, length, dtype=torch.bool, device=seqs.device).tril()
        for norm, attn, ffn_norm, ffn in zip(
            self.attn_norms, self.attns, self.ffn_norms, self.ffns, strict=True
        ):
            x = x.transpose(0, 1)  # (L, B, D), the MultiheadAttention layout
            q = norm(x)
            out, _ = attn(q, x, x, attn_mask=blocked)
            x = (q + out).transpose(0, 1)
            x = ffn_norm(x)
            x = (x + ffn(x.transpose(1, 2)).transpose(1, 2)) * keep
        return self.last_norm(x)

    def loss(self, seqs: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """BCE over positions with a next item."""
        h = self.hidden(seqs)
        pos_logits = (h * self.item_emb(pos)).sum(-1)
        neg_logits = (h * self.item_emb(neg)).sum(-1)
        mask = pos != 0
        bce = nn.functional.binary_cross_entropy_with_logits
        return bce(pos_logits[mask], torch.ones_like(pos_logits[mask])) + bce(
            neg_logits[mask], torch.zeros_like(neg_logits[mask])
        )


def reference_batch(
    user_items: list[list[int]], batch_size: int, max_len: int, num_items: int
) -> tuple[np.ndarray, ...]:
    """The reference sampler: random users, arrays filled item by item, negatives by retry."""
    seqs, poss, negs = [], [], []
    for _ in range(batch_size):
        items = random.choice(user_items)
        seen = set(items)
        seq, pos, neg = (np.zeros(max_len, dtype=np.int64) for _ in range(3))
        nxt, idx = items[-1], max_len - 1
        for item in reversed(items[:-1]):
            seq[idx], pos[idx] = item, nxt
            sample = random.randint(1, num_items)
            while sample in seen:
                sample = random.randint(1, num_items)
            neg[idx] = sample
            nxt, idx = item, idx - 1
            if idx < 0:
                break
        seqs.append(seq)
        poss.append(pos)
        negs.append(neg)
    return np.stack(seqs), np.stack(poss), np.stack(negs)


def reference_throughput(
    user_items: list[list[int]], num_items: int, device: torch.device, num_batches: int
) -> float:
    """Sequences per second of the reference over `num_batches` batches of 128."""
    model = ReferenceSASRec(num_items, 50, 50, 2, 0.5).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.98))
    start = time.perf_counter()
    for _ in range(num_batches):
        seqs, pos, neg = (torch.from_numpy(a).to(device) for a in reference_batch(
            user_items, 128, 50, num_items
        ))  # fmt: skip
        loss = model.loss(seqs, pos, neg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
    return num_batches * 128 / (time.perf_counter() - start)


def sasrec_epoch(
    train: pl.DataFrame, num_items: int, overrides: str, device: torch.device
) -> tuple[float, float]:
    """Sequences per second of one epoch of `sasrec.training.train.train_epoch`, and its loss."""
    hparams = parse_hparams(overrides)
    sequences, lengths = training_tensors(train, hparams.max_len)
    hparams = with_data_defaults(hparams, lengths, num_items)
    torch.manual_seed(hparams.seed)
    model = SASRec(model_config(num_items, hparams)).to(device)
    beta = gbce_beta(hparams.num_negatives, num_items, hparams.gbce_t)
    trainer: nn.Module = NextItemObjective(model, hparams.loss, beta)
    if hparams.compile:
        trainer = torch.compile(trainer, dynamic=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=hparams.lr, betas=(0.9, 0.98), fused=True)
    generator = torch.Generator().manual_seed(hparams.seed)
    sequences = sequences.to(device)
    args = (optimizer, sequences, lengths, hparams, generator, num_items)
    if device.type == "cuda" or hparams.compile:
        train_epoch(trainer.train(), *args)  # warm-up: kernels, autotuning, compilation
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    loss = train_epoch(trainer.train(), *args)
    return len(sequences) / (time.perf_counter() - start), loss


def synthetic_train(num_users: int, num_items: int, seed: int = 0) -> pl.DataFrame:
    """Sequences with 5-core-like lengths (5 + geometric, mean about 8.5) and Zipf items."""
    rng = np.random.default_rng(seed)
    lengths = 3 + rng.geometric(1 / 4.5, num_users)  # training part: 2 items held out
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.8
    items = rng.choice(num_items, lengths.sum(), p=popularity / popularity.sum()) + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    sequences = [items[offsets[i] : offsets[i + 1]].tolist() for i in range(num_users)]
    return pl.DataFrame({schema.ITEM_SEQUENCE: sequences})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--hparams", default=PAPER_GAMES, help="overrides for sasrec")
    parser.add_argument("--source", type=Path, default=VIDEO_TXT, help="Video.txt or a copy")
    parser.add_argument("--synthetic-users", type=int, default=0, help="0: use --source")
    parser.add_argument("--synthetic-items", type=int, default=25_600)
    parser.add_argument("--reference-batches", type=int, default=100)
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.synthetic_users:
        train = synthetic_train(args.synthetic_users, args.synthetic_items)
        num_items, data = args.synthetic_items, f"synthetic {args.synthetic_users} sequences"
    else:
        with tempfile.TemporaryDirectory(prefix="bench_throughput_") as tmp:
            # Built afresh: a cache here would outlive a change of --source.
            sequences_dir = video_sequences(args.source, Path(tmp))
            train = pl.read_parquet(sequences_dir / schema.TRAIN_FILE)
        num_items, data = int(train[schema.ITEM_SEQUENCE].explode().max()), args.source.name
    machine = describe_machine()
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name()}, {machine}"
    rate, loss = sasrec_epoch(train, num_items, args.hparams, device)
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    epoch_seconds = len(train) / rate
    print(
        f"| {machine} | {data} | sasrec `{args.hparams}` | {rate:,.0f} seq/s "
        f"| {epoch_seconds:.1f} s/epoch | loss {loss:.3f} | peak {peak:.2f} GiB |",
        flush=True,
    )
    if args.skip_reference:
        return
    user_items = [s for s in train[schema.ITEM_SEQUENCE].to_list() if len(s) >= 2]
    reference = reference_throughput(user_items, num_items, device, args.reference_batches)
    print(
        f"| {machine} | {data} | reference (MultiheadAttention, Python sampler) "
        f"| {reference:,.0f} seq/s | | | | speed-up {rate / reference:.1f}x |"
    )


if __name__ == "__main__":
    main()
