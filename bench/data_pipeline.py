"""The data steps at full scale, next to the floor of reading the file at all.

    .venv/bin/python bench/synthetic_reviews.py          # build/bench/Video_Games.jsonl.gz
    .venv/bin/python bench/data_pipeline.py [--source FILE] [--kcore 5]

Times, in one run on one machine: `zcat FILE > /dev/null` (the floor: decompressing is
the least any reader does), then `sasrec download --source FILE` (a local file: conversion
to Parquet) and `sasrec sequences --kcore 5`, each as its own process, with its peak RSS
from wait4. Prints the Markdown rows for docs/benchmarks.md and the chain/floor ratio.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe_machine

SASREC = [sys.executable, "-m", "sasrec.cli"]


def timed(command: list[str], log: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of `command`, which must succeed."""
    started = time.perf_counter()
    with log.open("w") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed; see {log}")
    return elapsed, usage.ru_maxrss * 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", type=Path, default=Path("build/bench/Video_Games.jsonl.gz"))
    parser.add_argument("--kcore", type=int, default=5)
    args = parser.parse_args()
    if not args.source.is_file():
        raise SystemExit(f"{args.source} is missing: run bench/synthetic_reviews.py first")
    with tempfile.TemporaryDirectory(dir="build") as work_dir:
        work = Path(work_dir)
        floor = timed(["sh", "-c", f"zcat '{args.source}' > /dev/null"], work / "zcat.log")
        download = timed(
            [*SASREC, "download", "--source", str(args.source), "--out", str(work / "download")],
            work / "download.log",
        )
        interactions = work / "download" / "interactions.parquet"
        sequences = timed(
            [*SASREC, "sequences", "--interactions", str(interactions),
             "--out", str(work / "sequences"), "--kcore", str(args.kcore)],
            work / "sequences.log",
        )  # fmt: skip
        stats = json.loads((work / "sequences" / "stats.json").read_text())
    chain = download[0] + sequences[0]
    size_gb = args.source.stat().st_size / 1e9
    print(f"machine: {describe_machine()}; {args.source} ({size_gb:.2f} GB gzipped)")
    print(f"stats: {json.dumps(stats)}")
    print("| step | wall (s) | peak RSS (GB) | vs zcat |")
    print("| --- | ---: | ---: | ---: |")
    rows = [("zcat FILE > /dev/null (floor)", floor), ("download (convert to Parquet)", download),
            (f"sequences (--kcore {args.kcore})", sequences)]  # fmt: skip
    for name, (seconds, rss) in rows:
        print(f"| {name} | {seconds:.1f} | {rss / 1e9:.2f} | {seconds / floor[0]:.2f}x |")
    print(f"| download + sequences | {chain:.1f} | | **{chain / floor[0]:.2f}x** |")


if __name__ == "__main__":
    main()
