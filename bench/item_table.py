"""Training cost against catalogue size: dense item-table updates against row-wise ones.

The same users and sequence shapes are trained over catalogues of growing size, with the
default hparams (sampled softmax over 1,024 shared negatives) and `sparse_item_updates`
off (every step updates the whole table: gradient, Adam, weight average) and on (only the
rows the batch uses). Item popularity follows a Zipf law, as in reviews. Run from the
repository root:

    .venv/bin/python bench/item_table.py                  # 60K users; 25.6K, 500K, 2.75M items
    .venv/bin/python bench/item_table.py --device cuda    # the same on a GPU

Prints Markdown table rows for docs/benchmarks.md: seconds per epoch over the users (or per
batch, `--batches`), and each size's ratio to the smallest catalogue's.
"""

import argparse
import contextlib
import time

import numpy as np
import polars as pl
import torch

from machine import describe_machine
from sasrec.config import parse_hparams
from sasrec.data import schema
from sasrec.training.state import EpochInterrupted
from sasrec.training.train import Training, start_training, train_epoch


def zipf_sequences(num_users: int, num_items: int, seed: int = 0) -> pl.DataFrame:
    """Training sequences of 3 to 50 items (mean ~8, like 5-core reviews), Zipf popularity."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.geometric(1 / 6, num_users) + 2, 3, 50)
    ranks = np.arange(1, num_items + 1, dtype=np.float64)
    popularity = 1.0 / (ranks + 10.0)
    items = rng.choice(num_items, size=int(lengths.sum()), p=popularity / popularity.sum()) + 1
    sequences = np.split(items, np.cumsum(lengths)[:-1])
    return pl.DataFrame({schema.ITEM_SEQUENCE: [s.tolist() for s in sequences]})


def one_validation_user(train: pl.DataFrame) -> pl.DataFrame:
    """A validation frame of one user: training needs one, this benchmark times none."""
    first = train[schema.ITEM_SEQUENCE][0].to_list()
    return pl.DataFrame(
        {schema.USER_ID: [0], schema.HISTORY: [first[:-1]], schema.TARGET: [first[-1]]}
    )


def prepared_training(train: pl.DataFrame, num_items: int, sparse: bool, device: str) -> Training:
    """A training run of the defaults, set up (its set-up is not timed)."""
    hparams = parse_hparams({"sparse_item_updates": sparse, "device": device, "dropout": 0.7})
    return start_training(train, one_validation_user(train), num_items, hparams)


def seconds_of_training(training: Training, batches: int) -> tuple[float, int]:
    """Seconds of one epoch (or its first `batches` batches) and the batches it ran."""
    state = training.state
    after_step = (
        (lambda items: state.average.update_parameters(state.model, items))
        if state.average is not None
        else None
    )
    steps = 0

    def stop_requested() -> bool:
        nonlocal steps
        steps += 1
        return 0 < batches <= steps

    start = time.perf_counter()
    with contextlib.suppress(EpochInterrupted):  # after `batches`
        train_epoch(
            training.objective.train(), state.optimizer, training.sequences, training.lengths,
            training.hparams, state.generator, state.model.config.num_items, after_step, None,
            stop_requested, state.item_table,
        )  # fmt: skip
    if state.item_table is not None:  # every row brought up to date, as each epoch ends
        state.item_table.finish_epoch()
    if training.sequences.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=60_000)
    parser.add_argument("--items", type=int, nargs="+", default=[25_600, 500_000, 2_750_000])
    parser.add_argument("--batches", type=int, default=0, help="per size; 0: a whole epoch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dense-up-to", type=int, default=2_750_000,
                        help="time the dense updates only up to this catalogue size")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"machine: {describe_machine()}, device {args.device}, torch {torch.__version__}")
    print(f"{args.users:,} users; {'an epoch' if not args.batches else f'{args.batches} batches'}")
    print("| items | updates | seconds | batches | s / batch | x smallest catalogue |")
    print("|---|---|---|---|---|---|")
    smallest: dict[bool, float] = {}
    for num_items in args.items:
        train = zipf_sequences(args.users, num_items)
        for sparse in (False, True):
            if not sparse and num_items > args.dense_up_to:
                continue
            training = prepared_training(train, num_items, sparse, args.device)
            seconds, steps = seconds_of_training(training, args.batches)
            per_batch = seconds / steps
            smallest.setdefault(sparse, per_batch)
            print(
                f"| {num_items:,} | {'row-wise' if sparse else 'dense'} | {seconds:.1f} | {steps} "
                f"| {per_batch:.3f} | {per_batch / smallest[sparse]:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
