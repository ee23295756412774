"""What mixing the training transitions into the model's scores costs.

On a synthetic sequences folder (bench/scoring.py's: 5-core-like lengths, Zipf items) and
an untrained model of the default shape (cost does not depend on the weights), times
- building the transition table from the training sequences (`Transitions.of_sequences`);
- full-catalogue ranking of every test user (`rank_held_out`, no sampled protocols) by
  the model alone and by the model with the transitions mixed in, alternating;
- choosing the weight after training: `choose_transition_weight` on early stopping's
  10,000 validation users (one pass per weight of the grid).
Run from the repository root:

    .venv/bin/python bench/transition_mix.py                         # 5-core size
    .venv/bin/python bench/transition_mix.py --users 300000 --items 137200

Prints Markdown table rows for docs/benchmarks.md.
"""

import argparse
import dataclasses
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from machine import describe_machine
from sasrec.config import HParams
from sasrec.inputs import read_sequences
from sasrec.model import SASRec
from sasrec.scoring import rank_held_out
from sasrec.training.train import model_config, validate, validation_sample
from sasrec.training.transition_mix import (
    TRANSITION_WEIGHTS,
    choose_transition_weight,
    with_transitions,
)
from sasrec.transitions import Transitions
from scoring import synthetic_sequences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=94_762)
    parser.add_argument("--items", type=int, default=25_612)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="transition_mix_"))
    synthetic_sequences(work / "seq", args.users, args.items)
    sequences = read_sequences(work / "seq")
    hparams = HParams()
    model = SASRec(model_config(args.items, dataclasses.replace(hparams, dropout=0.7))).eval()

    start = time.perf_counter()
    transitions = Transitions.of_sequences(sequences.train, args.items)
    build_seconds = time.perf_counter() - start
    mixed = with_transitions(model, transitions, 0.1)

    def ranking_seconds(scorer: SASRec) -> float:
        start = time.perf_counter()
        rank_held_out(scorer, sequences.test, args.items, hparams.max_len, num_sampled=0)
        return time.perf_counter() - start

    alone, with_mix = [], []
    for _ in range(args.repeats):
        alone.append(ranking_seconds(model))
        with_mix.append(ranking_seconds(mixed))
    valid = validation_sample(sequences.valid, hparams.max_val_users)
    start = time.perf_counter()
    choose_transition_weight(model, transitions, partial(validate, valid=valid))
    choose_seconds = time.perf_counter() - start

    alone_s, mixed_s = statistics.median(alone), statistics.median(with_mix)
    print(f"{describe_machine()}; medians of {args.repeats} alternating runs")
    print(
        "| users | items | transitions | table build s | rank all test users s, alone "
        "| with transitions | ratio | choose weight s (passes) |"
    )
    print(
        f"| {args.users:,} | {args.items:,} | {len(transitions.counts):,} | "
        f"{build_seconds:.1f} | {alone_s:.1f} | {mixed_s:.1f} | {mixed_s / alone_s:.2f}x | "
        f"{choose_seconds:.1f} ({len(TRANSITION_WEIGHTS)}) |"
    )


if __name__ == "__main__":
    main()
