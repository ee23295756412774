"""Scoring speed: full-catalogue evaluation and top-K recommendations for every user.

Builds a synthetic sequences directory and an untrained model of the requested size (the
cost of scoring does not depend on the weights), then times
- `rank_held_out`: every test user's held-out item ranked against the whole catalogue,
  plus the uniform and popularity-sampled protocols (what the evaluate step runs per scorer);
- `evaluate_model`: the whole evaluate step (the model and both baselines on the test
  users, validation, breakdowns, report);
- `recommend_all_users`: every user's top 10 unseen items written to Parquet;
- on one batch: the score product laid out users x items against items x users, and
  `top_k` against the plain `Tensor.topk` it replaces in both layouts.
Run from the repository root:

    .venv/bin/python bench/scoring.py                                  # 5-core size, CPU
    .venv/bin/python bench/scoring.py --users 2800000 --items 137200 --device cuda

Prints Markdown table rows for docs/benchmarks.md.
"""

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from machine import describe_machine
from sasrec.config import HParams
from sasrec.data import schema
from sasrec.evaluation.evaluate import evaluate_model
from sasrec.io import atomic_dir, write_json
from sasrec.metrics import top_k
from sasrec.model import SASRec
from sasrec.model_dir import save_model_dir
from sasrec.scoring import item_popularity, rank_held_out
from sasrec.serving.recommend import recommend_all_users
from sasrec.tensors import pad_left
from sasrec.training.train import model_config


def synthetic_sequences(out_dir: Path, num_users: int, num_items: int) -> None:
    """A sequences folder with 5-core-like lengths (mean ~8.5) and Zipf items, leave-one-out."""
    rng = np.random.default_rng(0)
    lengths = 4 + rng.geometric(1 / 4.5, num_users)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.8
    items = (rng.choice(num_items, lengths.sum(), p=popularity / popularity.sum()) + 1).astype(
        np.int32
    )
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    frame = pl.DataFrame({
        schema.USER_ID: [f"U{u}" for u in range(num_users)],
        "items": pl.Series(pa.ListArray.from_arrays(offsets, items)),
        "length": lengths,
    })  # fmt: skip
    with atomic_dir(out_dir, schema.SEQUENCES_STEP) as tmp:
        frame.select(
            schema.USER_ID,
            pl.col("items").list.head(pl.col("length") - 2).alias(schema.ITEM_SEQUENCE),
        ).cast(schema.TRAIN_SCHEMA).write_parquet(tmp / schema.TRAIN_FILE)
        for name, held_out in ((schema.VALID_FILE, 2), (schema.TEST_FILE, 1)):
            frame.select(
                schema.USER_ID,
                pl.col("items").list.head(pl.col("length") - held_out).alias(schema.HISTORY),
                pl.col("items").list.get(-held_out).alias(schema.TARGET),
            ).cast(schema.HELD_OUT_SCHEMA).write_parquet(tmp / name)
        pl.DataFrame({
            schema.ITEM_INDEX: np.arange(1, num_items + 1, dtype=np.int32),
            schema.ITEM_ID: [f"I{i}" for i in range(1, num_items + 1)],
        }).write_parquet(tmp / schema.ITEM_VOCAB_FILE)  # fmt: skip
        write_json({"num_items": num_items, "num_users": num_users}, tmp / schema.STATS_FILE)


def seconds_per_call(function: Callable[[], object], calls: int = 30) -> float:
    """Mean wall time of `function` after one warm-up call."""
    function()
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def layout_rows(model: SASRec, test: pl.DataFrame, machine: str, batch_size: int) -> None:
    """On one batch: the score product and `top_k` against `Tensor.topk`, in both layouts."""
    histories = pad_left(test[schema.HISTORY][:batch_size], width=model.config.max_len)
    with torch.no_grad():
        hidden = model.encode(histories)[:, -1, :]  # (B, D)
        scores = model(histories)  # (B, N + 1), items x users in memory on CPU
    weight, bias = model.output_part(model.item_emb.weight).detach(), model.item_bias.detach()
    users_first = seconds_per_call(lambda: torch.addmm(bias, hidden, weight.T))
    items_first = seconds_per_call(lambda: torch.addmm(bias.unsqueeze(1), weight, hidden.T))
    shape = f"{batch_size} x {scores.shape[1]:,} scores"
    print(f"| {machine} | {shape} | score product: users x items / items x users "
          f"| {users_first * 1e3:.2f} / {items_first * 1e3:.2f} ms "
          f"| {users_first / items_first:.1f}x |")  # fmt: skip
    for layout, batch in (("users x items", scores.contiguous()), ("items x users", scores)):
        plain = seconds_per_call(lambda b=batch: b.topk(10, dim=1))
        ours = seconds_per_call(lambda b=batch: top_k(b, 10))
        print(f"| {machine} | {shape}, {layout} in memory "
              f"| top 10: `Tensor.topk` / `top_k` | {plain * 1e3:.2f} / {ours * 1e3:.2f} ms "
              f"| {plain / ours:.1f}x |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=94_800)
    parser.add_argument("--items", type=int, default=25_600)
    parser.add_argument("--hidden-size", type=int, default=HParams().hidden_size)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    device = torch.device(args.device)
    work = Path(tempfile.mkdtemp(prefix="bench_scoring_"))
    synthetic_sequences(work / "seq", args.users, args.items)
    hparams = HParams(hidden_size=args.hidden_size, dropout=0.0)  # scoring: dropout is off
    model = SASRec(model_config(args.items, hparams))
    test = pl.read_parquet(work / "seq" / schema.TEST_FILE)
    popularity = item_popularity(pl.read_parquet(work / "seq" / schema.TRAIN_FILE), args.items)
    training_info = {"hparams": {"loss": hparams.loss}, "epochs_run": 0, "best_epoch": 0}
    save_model_dir(model, work / "seq", training_info, work / "model", popularity)
    model = model.to(device).eval()
    machine = describe_machine()
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name()}, {machine}"
    size = f"{args.users:,} users x {args.items:,} items, d={args.hidden_size}"

    def report(path: str, function: Callable[[], object]) -> None:
        """Time `function` and print its row at once (a slow later path can time out)."""
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
        print(f"| {machine} | {size} | {path} | {seconds:.1f} s | peak RSS so far "
              f"{peak:.2f} GiB |", flush=True)  # fmt: skip

    report("rank_held_out (full + 2 sampled protocols)", lambda: rank_held_out(
        model, test, args.items, hparams.max_len, popularity,
        device=device, batch_size=args.batch_size,
    ))  # fmt: skip
    report("recommend_all_users (top 10, Parquet)", lambda: recommend_all_users(
        work / "model", work / "seq", work / "recs", k=10, device=args.device,
    ))  # fmt: skip
    report(
        "evaluate step (model and 2 baselines on test, validation, report)",
        lambda: evaluate_model(work / "model", work / "seq", work / "eval", device=args.device),
    )
    if device.type == "cpu":
        layout_rows(model, test, machine, args.batch_size)


if __name__ == "__main__":
    main()
