"""The pipeline at the size of the Books category (29.5M reviews, 10.3M users, 4.4M items).

    .venv/bin/python bench/synthetic_reviews.py --out build/bench/Books.jsonl.gz \
        --reviews 29500000 --users 10300000 --items 4400000
    .venv/bin/python bench/books_scale.py [--source build/bench/Books.jsonl.gz]

Each step runs as its own process (`sasrec ...`), timed, with its peak RSS from wait4:
1. the data steps on the whole file: `zcat` (the floor), `download`, `sequences` with
   `--kcore 5` and `--kcore 0`; their seconds per million reviews compare with
   `bench/data_pipeline.py`'s at Video_Games size;
2. train (`max_epochs` 1, the default loss), evaluate and recommend on the 0-core sequences
   with the whole catalogue (millions of items) but `--users` sampled users, so that their
   memory is measured at full catalogue size in minutes. Their time grows with the number
   of users: the script prints the seconds per 1,000 sampled users and the full folder's
   counts (training sequences of 2+ items, test users, all users) to scale them by.
"""

import argparse
import json
import tempfile
from pathlib import Path

import polars as pl

from data_pipeline import SASREC, timed
from machine import describe_machine
from sasrec.data import schema
from sasrec.io import atomic_dir, write_json


def sample_users(sequences: Path, out: Path, num_users: int) -> dict[str, int]:
    """A sequences folder with `num_users` test users drawn at random and the whole catalogue.

    Returns:
        The full folder's counts: training sequences of 2+ items, test users, all users.
    """
    splits = {
        name: pl.read_parquet(sequences / name)
        for name in (schema.TRAIN_FILE, schema.VALID_FILE, schema.TEST_FILE)
    }
    train, test = splits[schema.TRAIN_FILE], splits[schema.TEST_FILE]
    users = test.select(schema.USER_ID).sample(min(num_users, test.height), seed=0)
    with atomic_dir(out, schema.SEQUENCES_STEP) as tmp:
        for name, frame in splits.items():
            frame.join(users, on=schema.USER_ID).write_parquet(tmp / name)
        for name in (schema.ITEM_VOCAB_FILE, schema.ITEM_TITLES_FILE):
            if (sequences / name).is_file():
                (tmp / name).write_bytes((sequences / name).read_bytes())
        stats = json.loads((sequences / schema.STATS_FILE).read_text())
        write_json(stats | {"sampled_users": users.height}, tmp / schema.STATS_FILE)
    return {
        "training sequences of 2+ items": int((train[schema.ITEM_SEQUENCE].list.len() >= 2).sum()),
        "test users": test.height,
        "all users": train.height,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=Path("build/bench/Books.jsonl.gz"))
    parser.add_argument("--users", type=int, default=5_000, help="users of the model steps")
    parser.add_argument("--reviews", type=float, default=29.5e6, help="reviews in --source")
    args = parser.parse_args()
    if not args.source.is_file():
        raise SystemExit(f"{args.source} is missing: see this script's docstring")
    print(f"machine: {describe_machine()}; {args.source}", flush=True)
    print("| step | wall (s) | s per M reviews | peak RSS (GB) |")
    print("| --- | ---: | ---: | ---: |")

    def row(name: str, result: tuple[float, int]) -> None:
        seconds, rss = result
        per_million = seconds / (args.reviews / 1e6)
        print(f"| {name} | {seconds:.1f} | {per_million:.2f} | {rss / 1e9:.2f} |", flush=True)

    with tempfile.TemporaryDirectory(dir="build") as work_dir:
        work = Path(work_dir)
        floor = ["sh", "-c", f"zcat '{args.source}' > /dev/null"]
        row("zcat FILE > /dev/null (floor)", timed(floor, work / "zcat.log"))
        row("download", timed(
            [*SASREC, "download", "--source", str(args.source), "--out", str(work / "download")],
            work / "download.log",
        ))  # fmt: skip
        for kcore in (5, 0):
            row(f"sequences --kcore {kcore}", timed(
                [*SASREC, "sequences", "--interactions",
                 str(work / "download" / schema.INTERACTIONS_FILE),
                 "--out", str(work / f"sequences{kcore}"), "--kcore", str(kcore)],
                work / f"sequences{kcore}.log",
            ))  # fmt: skip
            stats = json.loads((work / f"sequences{kcore}" / schema.STATS_FILE).read_text())
            print(f"stats --kcore {kcore}: {json.dumps(stats)}", flush=True)
        sampled = work / "sampled"
        counts = sample_users(work / "sequences0", sampled, args.users)
        steps = {
            "train (max_epochs 1)": ["train", "--sequences", str(sampled),
                                     "--out", str(work / "model"),
                                     "--hparams", '{"max_epochs": 1}',
                                     "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}"],
            "evaluate": ["evaluate", "--model", str(work / "model"), "--sequences",
                         str(sampled), "--out", str(work / "evaluation")],
            "recommend": ["recommend", "--model", str(work / "model"), "--sequences",
                          str(sampled), "--out", str(work / "recommendations")],
        }  # fmt: skip
        print(f"\n{args.users:,} sampled test users, the whole catalogue; the 0-core folder "
              f"has {', '.join(f'{v:,} {k}' for k, v in counts.items())}:")  # fmt: skip
        print("| step | wall (s) | s per 1,000 sampled users | peak RSS (GB) |")
        print("| --- | ---: | ---: | ---: |")
        for name, command in steps.items():
            seconds, rss = timed([*SASREC, *command], work / f"{command[0]}.log")
            per_thousand = seconds / args.users * 1000
            print(f"| {name} | {seconds:.1f} | {per_thousand:.2f} | {rss / 1e9:.2f} |", flush=True)


if __name__ == "__main__":
    main()
