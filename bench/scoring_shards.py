"""Scoring sharded across pods: each shard's wall time, and the merges', per shard count.

What the pipeline runs with `scoring_shards` N: N "Score users" tasks (`score_shard`: the
model and both baselines on the shard's test users, the model on its validation users),
then "Evaluate" merging their ranks; N "Recommend" tasks, then their files joined. On a
cluster the shards run at once, so a count's wall time is its slowest shard plus the
merge. Here they run one after another in this process, on the synthetic sequences and
untrained model of `bench/scoring.py`. Run from the repository root:

    .venv/bin/python bench/scoring_shards.py                      # 5-core size; 1, 2, 4, 8
    .venv/bin/python bench/scoring_shards.py --users 2800000 --items 137200 \
        --shards 16 64 --run-shards 1                             # 0-core: one shard of each

With --run-shards, only that many shards of each count are timed (a slowest-shard
estimate: shards differ by at most one block of users) and the merges are not.
Prints Markdown table rows for docs/benchmarks.md.
"""

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl

from machine import describe_machine
from sasrec.config import HParams
from sasrec.data import schema
from sasrec.evaluation.evaluate import evaluate_model, score_shard
from sasrec.model import SASRec
from sasrec.model_dir import save_model_dir
from sasrec.scoring import item_popularity
from sasrec.serving.recommend import merge_recommendations, recommend_step
from sasrec.training.train import model_config
from scoring import synthetic_sequences


def timed(function: Callable[[], object]) -> float:
    """Seconds `function` takes."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def shard_seconds(
    run: Callable[[int, Path], object], shards: int, runs: int, work: Path
) -> list[float]:
    """Seconds of the first `runs` shards of `shards`, each writing into its own folder."""
    return [timed(lambda s=shard: run(s, work / f"shard{s}")) for shard in range(runs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=94_800)
    parser.add_argument("--items", type=int, default=25_600)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--run-shards", type=int, default=0, help="per count; 0: all")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_shards_"))
    sequences, model_dir = work / "seq", work / "model"
    synthetic_sequences(sequences, args.users, args.items)
    hparams = HParams(dropout=0.0)
    model = SASRec(model_config(args.items, hparams))
    popularity = item_popularity(pl.read_parquet(sequences / schema.TRAIN_FILE), args.items)
    training_info = {"hparams": {"loss": hparams.loss}, "epochs_run": 0, "best_epoch": 0}
    save_model_dir(model, sequences, training_info, model_dir, popularity)
    print(f"machine: {describe_machine()}; {args.users:,} users x {args.items:,} items, d=64")
    columns = ["shards", "shards timed", "score: slowest shard", "evaluate: merge",
               "recommend: slowest shard", "recommend: join",
               "on a cluster, evaluation / recommendations"]  # fmt: skip
    print(f"| {' | '.join(columns)} |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for shards in args.shards:
        runs = min(args.run_shards or shards, shards)
        folder = work / f"of{shards}"
        scored = shard_seconds(
            lambda s, out, n=shards: score_shard(model_dir, sequences, out, s, n),
            shards, runs, folder / "score",
        )  # fmt: skip
        recommended = shard_seconds(
            lambda s, out, n=shards: recommend_step(model_dir, sequences, out, 10, s, n),
            shards, runs, folder / "recommend",
        )  # fmt: skip
        merges = ["not timed", "not timed"]
        wall = f"≥ {max(scored):.1f} s / ≥ {max(recommended):.1f} s (merges not timed)"
        if runs == shards:
            evaluate = timed(lambda f=folder, n=shards: evaluate_model(
                model_dir, sequences, f / "evaluation",
                score_dirs=[f / "score" / f"shard{s}" for s in range(n)],
            ))  # fmt: skip
            join = timed(lambda f=folder, n=shards: merge_recommendations(
                [f / "recommend" / f"shard{s}" for s in range(n)], f / "recommendations"
            ))  # fmt: skip
            merges = [f"{evaluate:.1f} s", f"{join:.1f} s"]
            wall = f"{max(scored) + evaluate:.1f} s / {max(recommended) + join:.1f} s"
        print(f"| {shards} | {runs} | {max(scored):.1f} s | {merges[0]} | {max(recommended):.1f} s "
              f"| {merges[1]} | {wall} |", flush=True)  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS of this process: {peak:.2f} GiB")


if __name__ == "__main__":
    main()
