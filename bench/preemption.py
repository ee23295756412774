"""How long training takes to stop on SIGTERM (Kubernetes' preemption), per catalogue size.

For each size, a training process of its own runs the defaults on synthetic sequences of
that many users and items (lengths and items drawn as in Amazon reviews: most users short,
items Zipf-popular). Once it is a few seconds into its first epoch it gets SIGTERM. Reported:
the time from SIGTERM to the process's exit (the rest of the current batch, then the
checkpoint), the checkpoint write alone (from the training's own log line), and the
checkpoint's size. SIGTERM during a validation pass takes effect after it, so the time of
one pass (`max_val_users` of them, 10,000 by default) is reported too. The pod's grace
period (terminationGracePeriodSeconds, 30 s by default) must exceed exit plus validation.

    python bench/preemption.py                       # 5-core and 0-core Video_Games sizes
    python bench/preemption.py --sizes 94800x25600   # users x items
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

from machine import describe_machine

SIZES = {
    "5-core Video_Games": (94_800, 25_600, 5.0),  # users, items, mean items per user
    "0-core Video_Games": (2_800_000, 137_000, 1.6),
}


def synthetic_split(users: int, items: int, mean_length: float, seed: int = 0):
    """(train, valid) frames of the sequences step's layout, drawn at random."""
    import numpy as np
    import polars as pl

    from sasrec.data import schema

    rng = np.random.default_rng(seed)
    lengths = 2 + rng.geometric(1.0 / max(mean_length - 1.0, 1.01), users).clip(max=200)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    flat = rng.choice(items, int(lengths.sum()), p=popularity / popularity.sum()) + 1
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    sequences = pl.Series(schema.ITEM_SEQUENCE, [flat[a:b] for a, b in pairwise(offsets)])
    train = pl.DataFrame({schema.USER_ID: [str(u) for u in range(users)]}).with_columns(sequences)
    valid_rows = min(users, 20_000)
    valid = pl.DataFrame({
        schema.USER_ID: [str(u) for u in range(valid_rows)],
        schema.HISTORY: sequences[:valid_rows],
        schema.TARGET: rng.integers(1, items + 1, valid_rows),
    })  # fmt: skip
    return train, valid


def child(users: int, items: int, mean_length: float, checkpoint: str) -> None:
    """Train on the synthetic data until SIGTERM; the parent measures."""
    import logging

    from sasrec.config import parse_hparams
    from sasrec.training.train import fit, start_training

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    train, valid = synthetic_split(users, items, mean_length)
    hparams = parse_hparams({"eval_every": 1000, "max_epochs": 1000, "patience": 1000})
    training = start_training(train, valid, items, hparams, checkpoint)
    print("training", flush=True)
    fit(training)


def measure(users: int, items: int, mean_length: float, into_epoch_s: float) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = Path(scratch) / "checkpoint.pt"
        process = subprocess.Popen(
            [sys.executable, __file__, "--child", f"{users}x{items}x{mean_length}",
             str(checkpoint)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stdout.readline().strip() == "training", process.stderr.read()
        time.sleep(into_epoch_s)
        os.kill(process.pid, signal.SIGTERM)
        sent = time.perf_counter()
        _, stderr = process.communicate(timeout=600)
        exit_s = time.perf_counter() - sent
        saved = re.search(r"checkpointed at (batch \d+ of epoch \d+) in ([\d.]+) s", stderr)
        assert process.returncode == 143 and saved, stderr[-2000:]
        return {
            "exit_after_sigterm_s": round(exit_s, 2),
            "checkpoint_write_s": float(saved.group(2)),
            "stopped_at": saved.group(1),
            "checkpoint_mb": round(checkpoint.stat().st_size / 1e6, 1),
        }


def validation_seconds(users: int, items: int, mean_length: float) -> float:
    """One validation pass of the defaults' sample (untrained weights: the cost is the same)."""
    from sasrec.config import parse_hparams
    from sasrec.training.train import start_training, validate

    train, valid = synthetic_split(users, items, mean_length)
    training = start_training(train, valid, items, parse_hparams({}))
    start = time.perf_counter()
    validate(training.state.evaluated_model, training.valid)
    return round(time.perf_counter() - start, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="*", help="USERSxITEMS[xMEAN_LENGTH] (default: both)")
    parser.add_argument("--into-epoch", type=float, default=20.0, help="seconds before SIGTERM")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        users, items, mean_length = args.child[0].split("x")
        child(int(users), int(items), float(mean_length), args.child[1])
        return
    sizes = SIZES
    if args.sizes:
        sizes = {}
        for size in args.sizes:
            users, items, *length = size.split("x")
            sizes[size] = (int(users), int(items), float(length[0]) if length else 5.0)
    print(json.dumps({"machine": describe_machine()}))
    for name, (users, items, mean_length) in sizes.items():
        result = measure(users, items, mean_length, args.into_epoch)
        result["validation_pass_s"] = validation_seconds(users, items, mean_length)
        print(json.dumps({"size": name, "users": users, "items": items, **result}), flush=True)


if __name__ == "__main__":
    main()
