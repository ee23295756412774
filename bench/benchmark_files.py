"""A category's official `0core/last_out_w_his` files, derived from a raw reviews file.

    .venv/bin/python bench/synthetic_reviews.py          # build/bench/Video_Games.jsonl.gz
    .venv/bin/python bench/benchmark_files.py [--reviews FILE] [--out build/bench/mirror]

No network here, so the files the original project trains on are written the way the
Amazon Reviews 2023 benchmark scripts write them (`kcore_filtering.py` with k = 0 and
`last_out_split.py`, hyp1231/AmazonReviews2023), from the synthetic full-size file:

- a user's reviews of one item count once, the earliest, and each user's are in time order;
- every user's last review is a test row, the one before it (users with two reviews or
  more) a validation row, the others (users with three or more) training rows;
- each row's `history` column holds the user's earlier items, space-separated, so the files
  grow with the square of a user's length: the heavy users of the power law dominate them.

Writes OUT/benchmark/0core/last_out_w_his/<Category>.{train,valid,test}.csv.gz, the layout
of the official site, for `bench/zero_core.py --mirror OUT` to serve over HTTP.
"""

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import polars as pl
from isal import igzip

from sasrec.data import schema
from sasrec.data.readers import convert_reviews_jsonl
from sasrec.io import atomic_path

HEADER = "user_id,parent_asin,rating,timestamp,history\n"
PARTS = ("train", "valid", "test")
_LATER = "later"  # the user's reviews after this one: 0 is the test row, 1 the validation row


def ordered_reviews(reviews: Path) -> pl.DataFrame:
    """user, item, rating, timestamp of each user's first review of an item, in time order."""
    with tempfile.TemporaryDirectory(dir="build") as work:
        interactions = Path(work) / "interactions.parquet"
        convert_reviews_jsonl(reviews, interactions)
        return (
            pl.read_parquet(interactions)
            .sort(schema.USER_ID, schema.TIMESTAMP, maintain_order=True)
            .unique([schema.USER_ID, schema.ITEM_ID], keep="first", maintain_order=True)
        )


def write_split_files(frame: pl.DataFrame, folder: Path, category: str) -> dict[str, int]:
    """The three files of the last-out split with histories; rows written per file.

    Each file is gzipped by ISA-L at level 1 and renamed into place only when complete.
    """
    rows = dict.fromkeys(PARTS, 0)
    with contextlib.ExitStack() as stack:
        files = {}
        for part in PARTS:
            tmp = stack.enter_context(atomic_path(folder / f"{category}.{part}.csv.gz"))
            files[part] = stack.enter_context(igzip.open(tmp, "wt", compresslevel=1))
        for part_file in files.values():
            part_file.write(HEADER)
        columns = (schema.USER_ID, schema.ITEM_ID, schema.RATING, schema.TIMESTAMP, _LATER)
        user, earlier = None, []
        for user_id, item, rating, timestamp, later in frame.select(columns).iter_rows():
            if user_id != user:
                user, earlier = user_id, []
            part = "test" if later == 0 else "valid" if later == 1 else "train"
            files[part].write(f"{user_id},{item},{rating},{timestamp},{' '.join(earlier)}\n")
            earlier.append(item)
            rows[part] += 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=Path, default=Path("build/bench/Video_Games.jsonl.gz"))
    parser.add_argument("--out", type=Path, default=Path("build/bench/mirror"))
    parser.add_argument("--category", default="Video_Games")
    args = parser.parse_args()
    started = time.perf_counter()
    frame = ordered_reviews(args.reviews).with_columns(
        (pl.len() - 1 - pl.int_range(pl.len())).over(schema.USER_ID).alias(_LATER)
    )
    folder = args.out / "benchmark" / "0core" / "last_out_w_his"
    rows = write_split_files(frame, folder, args.category)
    sizes = {p.name: f"{p.stat().st_size / 1e6:.0f} MB" for p in sorted(folder.iterdir())}
    print(f"{folder}: rows {rows}, gzipped {sizes}, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
