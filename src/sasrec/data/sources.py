"""Where interactions come from: source names, their URLs or paths, and their formats."""

import difflib
import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path

from sasrec.errors import SASRecError

AMAZON_2023_PREFIX = "amazon2023:"
AMAZON_2023_BASE_URL = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023"
AMAZON_2023_BASE_URL_ENV = "SASREC_AMAZON_BASE_URL"
DEFAULT_SOURCE = "amazon2023:Video_Games"

# The categories of Amazon Reviews 2023 (Hou et al., 2024), as named in its file paths.
AMAZON_2023_CATEGORIES = (
    "All_Beauty", "Amazon_Fashion", "Appliances", "Arts_Crafts_and_Sewing", "Automotive",
    "Baby_Products", "Beauty_and_Personal_Care", "Books", "CDs_and_Vinyl",
    "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry", "Digital_Music",
    "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food", "Handmade_Products",
    "Health_and_Household", "Health_and_Personal_Care", "Home_and_Kitchen",
    "Industrial_and_Scientific", "Kindle_Store", "Magazine_Subscriptions", "Movies_and_TV",
    "Musical_Instruments", "Office_Products", "Patio_Lawn_and_Garden", "Pet_Supplies",
    "Software", "Sports_and_Outdoors", "Subscription_Boxes", "Tools_and_Home_Improvement",
    "Toys_and_Games", "Unknown", "Video_Games",
)  # fmt: skip

# The official benchmark files: k-core subsets, each as a rating-only file and as splits.
BENCHMARK_SUBSETS = ("0core", "5core")
RATING_ONLY = "rating_only"
BENCHMARK_SPLITS = ("last_out", "last_out_w_his", "timestamp", "timestamp_w_his")
SPLIT_PARTS = ("train", "valid", "test")

REVIEWS_JSONL = "reviews_jsonl"  # official Amazon Reviews 2023 layout, one object per line
BENCHMARK_CSV = "benchmark_csv"  # official benchmark CSV: user_id,parent_asin,rating,timestamp
RECBOLE_INTER = "recbole_inter"  # RecBole atomic file: tab-separated, `name:type` header
SASREC_TEXT = "sasrec_text"  # `user item` per line, each user's lines in chronological order
_FORMAT_BY_SUFFIX = {
    ".jsonl": REVIEWS_JSONL,
    ".jsonl.gz": REVIEWS_JSONL,
    ".json.gz": REVIEWS_JSONL,
    ".csv": BENCHMARK_CSV,
    ".csv.gz": BENCHMARK_CSV,
    ".inter": RECBOLE_INTER,
    ".txt": SASREC_TEXT,
}


@dataclass(frozen=True)
class SourceFile:
    """One file of a source; `split` labels the files of an official split."""

    location: str
    split: str | None = None


def amazon_2023_base_url(override: str | None = None) -> str:
    """The Amazon Reviews 2023 base URL: `override`, else $SASREC_AMAZON_BASE_URL, else official."""
    base_url = override or os.environ.get(AMAZON_2023_BASE_URL_ENV) or AMAZON_2023_BASE_URL
    return base_url.rstrip("/")


@dataclass(frozen=True)
class Amazon2023Source:
    """An `amazon2023:<Category>[:<subset>[/<split>]]` source, its parts checked."""

    category: str
    subset: str = ""  # "": the raw reviews
    split: str = ""  # with a subset: "" or rating_only for the rating-only file, or a split


def _did_you_mean(category: str) -> str:
    """The hint "did you mean 'X'? " for the closest category (case and _ ignored), else ""."""
    by_key = {name.lower().replace("_", ""): name for name in AMAZON_2023_CATEGORIES}
    key = category.lower().replace("_", "").replace(" ", "").replace("-", "")
    close = difflib.get_close_matches(key, by_key, n=1, cutoff=0.6)
    return f"did you mean {by_key[close[0]]!r}? " if close else ""


def parse_amazon_2023(source: str) -> Amazon2023Source | None:
    """The parts of an `amazon2023:` source; None for a URL or a path.

    Raises:
        SASRecError: for an unknown category, subset or split.
    """
    if not source.startswith(AMAZON_2023_PREFIX):
        return None
    category, _, benchmark = source.removeprefix(AMAZON_2023_PREFIX).partition(":")
    if category not in AMAZON_2023_CATEGORIES:
        raise SASRecError(
            f"unknown Amazon Reviews 2023 category {category!r} in --source {source!r}; "
            f"{_did_you_mean(category)}the {len(AMAZON_2023_CATEGORIES)} categories: "
            f"{', '.join(AMAZON_2023_CATEGORIES)}"
        )
    subset, _, split = benchmark.partition("/")
    splits = (RATING_ONLY, *BENCHMARK_SPLITS)
    if benchmark and (subset not in BENCHMARK_SUBSETS or (split and split not in splits)):
        raise SASRecError(
            f"unknown benchmark {benchmark!r} in --source {source!r}; expected <subset> or "
            f"<subset>/<split> with subset in {', '.join(BENCHMARK_SUBSETS)} and split in "
            f"{', '.join(splits)}, e.g. {AMAZON_2023_PREFIX}{category}:5core/last_out"
        )
    return Amazon2023Source(category, subset, split)


def resolve_source_files(source: str, amazon_base_url: str | None = None) -> list[SourceFile]:
    """The files of a `--source` value: URLs or local paths, checked before any download.

    Args:
        source: `amazon2023:<Category>[:<subset>[/<split>]]`, an http(s), gs:// or s3:// URL, or a
            local path. Without a subset the raw reviews; `:5core` (or `:5core/rating_only`)
            the rating-only 5-core file; `:5core/last_out` the three files of that split.
        amazon_base_url: Mirror of the Amazon Reviews 2023 files; see `amazon_2023_base_url`.

    Raises:
        SASRecError: for an unknown category, subset or split, or a missing local path.
    """
    amazon = parse_amazon_2023(source)
    if amazon is None:
        return [SourceFile(resolve_source(source))]
    base_url, category = amazon_2023_base_url(amazon_base_url), amazon.category
    if not amazon.subset:
        return [SourceFile(f"{base_url}/raw/review_categories/{category}.jsonl.gz")]
    folder = f"{base_url}/benchmark/{amazon.subset}/{amazon.split or RATING_ONLY}"
    if amazon.split in ("", RATING_ONLY):
        return [SourceFile(f"{folder}/{category}.csv.gz")]
    return [SourceFile(f"{folder}/{category}.{part}.csv.gz", part) for part in SPLIT_PARTS]


def resolve_source(source: str) -> str:
    """A URL or an existing local path, as given.

    Raises:
        SASRecError: for a local path that does not exist.
    """
    if is_remote(source):
        return source
    if not Path(source).is_file():
        raise SASRecError(
            f"--source {source!r} is not an existing file, an http(s), gs:// or s3:// URL, or "
            f"{AMAZON_2023_PREFIX}<Category>"
        )
    return source


def is_remote(location: str) -> bool:
    """Whether `location` is a URL to download rather than a local path."""
    return location.startswith(("http://", "https://", "gs://", "s3://"))


def detect_format(location: str, local_file: Path | None = None) -> str:
    """The file format of a source: by content where conclusive, else by name.

    The content is the first line of `local_file`, when given.

    Raises:
        SASRecError: when neither tells.
    """
    if local_file is not None:
        by_content = sniff_format(local_file)
        if by_content:
            return by_content
    name = location.split("#", 1)[0].split("?", 1)[0].lower()
    for suffix, file_format in _FORMAT_BY_SUFFIX.items():
        if name.endswith(suffix):
            return file_format
    raise SASRecError(
        f"cannot tell the format of {location!r}: expected reviews JSONL, a benchmark CSV "
        f"(user_id,parent_asin,rating,timestamp), a RecBole .inter file or SASRec text "
        f"(`user item` lines), or a name ending in {', '.join(_FORMAT_BY_SUFFIX)}"
    )


def is_gzip(path: Path) -> bool:
    """Whether the file starts with the gzip magic bytes (its name may say otherwise)."""
    with path.open("rb") as file:
        return file.read(2) == b"\x1f\x8b"


def sniff_format(path: Path) -> str | None:
    """The format its first line shows (gzipped or not), or None when it shows none."""
    try:
        with (gzip.open if is_gzip(path) else open)(path, "rb") as file:
            first_line = file.readline(1 << 16).decode("utf-8", errors="replace").strip()
    except (OSError, EOFError):
        return None  # corrupt or truncated: the reader names the problem
    header = first_line.split(",")
    if first_line.startswith("{"):
        return REVIEWS_JSONL
    if "user_id" in header and "parent_asin" in header:
        return BENCHMARK_CSV
    if re.search(r"\w+:(token|float)\b", first_line) and "\t" in first_line:
        return RECBOLE_INTER
    if re.fullmatch(r"[\w.-]+ [\w.-]+", first_line):
        return SASREC_TEXT
    return None
