"""A synthetic Amazon Reviews 2023 category at full Video_Games scale, in the official layout.

    python bench/synthetic_reviews.py --out build/bench/Video_Games.jsonl.gz

Defaults: 4.6M reviews, 2.8M users with power-law activity (every user at least one
review), 137.2K items with power-law popularity, timestamps 1999-2023 weighted to recent
years, every field of the official files. Title and text lengths follow log-normal laws
fitted to the 1,000 real Video_Games reviews in shared/data (title: mu 2.89, sigma 0.78;
text: mu 5.08, sigma 1.70; mean line 832 bytes there), 10% of reviews carry an image,
so JSON parsing costs what it costs on the real file. The text is cut from a long stream
of Zipf-distributed words (no repeated lines, so gzip compresses it as it does prose).
Written in chunks through `gzip -6` (`pigz -6`, the same deflate on every core, when it is
installed), so memory stays bounded.

By default the items are drawn independently of each other: no model can beat popularity
there. `--sequential P` (what `make smoke` uses) gives the data an order worth learning:
the items are cut into series of `SERIES_LENGTH`, each user follows one series, and each
review is, with probability P, the user's next title in it (one to three steps on), else a
popular item. An item's successor then depends on the user's series, not on the last item
alone, so a model of the whole history can beat both baselines (see `series_items`).
"""

import argparse
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import polars as pl

FIRST_MS = 915_148_800_000  # 1999-01-01
LAST_MS = 1_694_000_000_000  # 2023-09
CHUNK_ROWS = 400_000
SERIES_LENGTH = 40  # titles of a series; a user's next one is 1-3 steps on, wrapping round


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    return weights / weights.sum()


def word_stream(rng: np.random.Generator, num_chars: int) -> str:
    """Prose-like text: Zipf-distributed words of 2-10 letters, some punctuation."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocabulary = ["".join(rng.choice(letters, rng.integers(2, 11))) for _ in range(20_000)]
    num_words = num_chars // 6
    words = np.array(vocabulary)[rng.choice(20_000, num_words, p=zipf_weights(20_000, 1.1))]
    words[rng.random(num_words) < 0.08] = "game."
    return " ".join(words.tolist())


def lengths(rng: np.random.Generator, n: int, mu: float, sigma: float, cap: int) -> np.ndarray:
    return np.clip(rng.lognormal(mu, sigma, n).astype(np.int64), 1, cap)


def review_times(rng: np.random.Generator, n: int) -> np.ndarray:
    """Epoch milliseconds; recent years weigh more, as on Amazon (exponential back from the end)."""
    age = np.minimum(rng.exponential(0.25, n), 1.0)
    return (LAST_MS - age * (LAST_MS - FIRST_MS)).astype(np.int64)


def series_items(
    rng: np.random.Generator,
    users: np.ndarray,
    timestamps: np.ndarray,
    num_items: int,
    follow: float,
) -> np.ndarray:
    """Items of reviews whose order carries signal: each user walks one series (see module doc).

    A user's position in their series advances at every review, also at the popular
    (off-series) ones, so after an off-series review the last item says nothing of the next
    and only the history does. Loops over review positions within users (as many as the
    longest history), each step vectorized over the users that long.
    """
    n = len(users)
    order = np.lexsort((timestamps, users))  # each user's reviews, oldest first
    sorted_users = users[order]
    first = np.r_[True, sorted_users[1:] != sorted_users[:-1]]
    run_starts = np.flatnonzero(first)
    position = np.arange(n) - np.repeat(run_starts, np.diff(np.r_[run_starts, n]))
    series_of = rng.permutation(num_items)  # series s holds series_of[s*L : (s+1)*L]
    num_series = max(num_items // SERIES_LENGTH, 1)
    length = min(SERIES_LENGTH, num_items)
    place = np.empty(n, dtype=np.int64)  # the index in series_of of each review's series title
    for depth in range(int(position.max()) + 1):
        rows = np.flatnonzero(position == depth)
        if depth == 0:
            series = rng.integers(0, num_series, len(rows))
            place[rows] = series * length + rng.integers(0, length, len(rows))
        else:
            previous = place[rows - 1]
            series, offset = previous // length, previous % length
            place[rows] = series * length + (offset + rng.integers(1, 4, len(rows))) % length
    popular = rng.choice(num_items, n, p=zipf_weights(num_items, 1.0))
    sorted_items = np.where(rng.random(n) < follow, series_of[place], popular)
    items = np.empty(n, dtype=np.int64)
    items[order] = sorted_items
    return items


def chunk_frame(
    rng: np.random.Generator,
    users: np.ndarray,
    items: np.ndarray,
    timestamps: np.ndarray,
    text: str,
) -> pl.DataFrame:
    n = len(users)
    title_len = lengths(rng, n, 2.89, 0.78, 200)
    text_len = lengths(rng, n, 5.08, 1.70, 20_000)
    starts = rng.integers(0, len(text) - 20_001, n)
    title_starts = rng.integers(0, len(text) - 201, n)
    image_url = "https://m.media-amazon.com/images/I/71{}._SL1600_.jpg"
    images = [
        [
            {
                "small_image_url": image_url.format(i),
                "medium_image_url": image_url.format(i),
                "large_image_url": image_url.format(i),
                "attachment_type": "IMAGE",
            }
        ]
        if has
        else []
        for i, has in enumerate(rng.random(n) < 0.1)
    ]
    return pl.DataFrame(
        {
            "rating": rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], n, p=[0.1, 0.05, 0.08, 0.15, 0.62]),
            "title": [text[s : s + k] for s, k in zip(title_starts, title_len, strict=True)],
            "text": [text[s : s + k] for s, k in zip(starts, text_len, strict=True)],
            "images": images,
            "asin": [f"B0{i * 7919 % 16**8:08X}" for i in items.tolist()],
            "parent_asin": [f"B0{i:08X}" for i in items.tolist()],
            "user_id": [f"A{u * 0x9E3779B97F4A7C15 % 36**20:027X}" for u in users.tolist()],
            "timestamp": timestamps,
            "helpful_vote": rng.geometric(0.6, n) - 1,
            "verified_purchase": rng.random(n) < 0.8,
        },
        strict=False,
    )


def generate(
    out: Path, num_reviews: int, num_users: int, num_items: int, seed: int, sequential: float = 0.0
) -> None:
    rng = np.random.default_rng(seed)
    # Every user reviews once; the rest of the reviews go to users by a power law.
    extra = rng.choice(num_users, num_reviews - num_users, p=zipf_weights(num_users, 0.9))
    users = rng.permutation(np.concatenate([np.arange(num_users), extra]))
    timestamps = review_times(rng, num_reviews)
    if sequential:
        items = series_items(rng, users, timestamps, num_items, sequential)
    else:
        items = rng.choice(num_items, num_reviews, p=zipf_weights(num_items, 1.0))
    text = word_stream(rng, 64 << 20)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as sink:
        compressor = shutil.which("pigz") or "gzip"
        compress = subprocess.Popen([compressor, "-6"], stdin=subprocess.PIPE, stdout=sink)
        for start in range(0, num_reviews, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, num_reviews)
            compress.stdin.write(
                chunk_frame(rng, users[start:stop], items[start:stop], timestamps[start:stop], text)
                .write_ndjson()
                .encode()
            )
            print(f"{stop:,} of {num_reviews:,} reviews", flush=True)
        compress.stdin.close()
        if compress.wait():
            raise SystemExit(f"{compressor} failed")
    tmp.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("build/bench/Video_Games.jsonl.gz"))
    parser.add_argument("--reviews", type=int, default=4_600_000)
    parser.add_argument("--users", type=int, default=2_800_000)
    parser.add_argument("--items", type=int, default=137_200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sequential", type=float, default=0.0, metavar="P",
        help="share of reviews that follow the user's series (0: items drawn independently)",
    )  # fmt: skip
    args = parser.parse_args()
    if not 0.0 <= args.sequential <= 1.0:
        parser.error(f"--sequential {args.sequential}: a probability, from 0 to 1")
    started = time.perf_counter()
    generate(args.out, args.reviews, args.users, args.items, args.seed, args.sequential)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e9:.2f} GB) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
