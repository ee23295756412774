"""Where interactions come from: source names, their URLs or paths, and their formats."""

import os
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

REVIEWS_JSONL = "reviews_jsonl"  # official Amazon Reviews 2023 layout, one object per line
SASREC_TEXT = "sasrec_text"  # `user item` per line, each user's lines in chronological order
_FORMAT_BY_SUFFIX = {".jsonl": REVIEWS_JSONL, ".jsonl.gz": REVIEWS_JSONL, ".txt": SASREC_TEXT}


def amazon_2023_base_url(override: str | None = None) -> str:
    """The Amazon Reviews 2023 base URL: `override`, else $SASREC_AMAZON_BASE_URL, else official."""
    base_url = override or os.environ.get(AMAZON_2023_BASE_URL_ENV) or AMAZON_2023_BASE_URL
    return base_url.rstrip("/")


def resolve_source(source: str, amazon_base_url: str | None = None) -> str:
    """Turn a `--source` value into a URL or a local path.

    Args:
        source: `amazon2023:<Category>`, an http(s) or gs:// URL, or a local path.
        amazon_base_url: Mirror of the Amazon Reviews 2023 files; see `amazon_2023_base_url`.

    Raises:
        SASRecError: for an unknown category or a local path that does not exist.
    """
    if source.startswith(AMAZON_2023_PREFIX):
        category = source.removeprefix(AMAZON_2023_PREFIX)
        if category not in AMAZON_2023_CATEGORIES:
            raise SASRecError(
                f"unknown Amazon Reviews 2023 category {category!r} in --source {source!r}; "
                f"valid categories: {', '.join(AMAZON_2023_CATEGORIES)}"
            )
        base_url = amazon_2023_base_url(amazon_base_url)
        return f"{base_url}/raw/review_categories/{category}.jsonl.gz"
    if is_remote(source):
        return source
    if not Path(source).is_file():
        raise SASRecError(
            f"--source {source!r} is not an existing file, an http(s)/gs:// URL, or "
            f"{AMAZON_2023_PREFIX}<Category>"
        )
    return source


def is_remote(location: str) -> bool:
    """Whether `location` is a URL to download rather than a local path."""
    return location.startswith(("http://", "https://", "gs://"))


def detect_format(location: str) -> str:
    """The file format of a source, from its name.

    Raises:
        SASRecError: when the name has none of the known suffixes.
    """
    name = location.split("#", 1)[0].split("?", 1)[0].lower()
    for suffix, file_format in _FORMAT_BY_SUFFIX.items():
        if name.endswith(suffix):
            return file_format
    raise SASRecError(
        f"cannot tell the format of {location!r}: expected a name ending in "
        f"{', '.join(_FORMAT_BY_SUFFIX)} (reviews JSONL or SASRec text)"
    )
