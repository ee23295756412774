import pytest

from sasrec.data.sources import (
    AMAZON_2023_BASE_URL,
    REVIEWS_JSONL,
    SASREC_TEXT,
    detect_format,
    resolve_source,
)
from sasrec.errors import SASRecError


def test_amazon_category_resolves_to_the_official_raw_reviews_file(monkeypatch):
    monkeypatch.delenv("SASREC_AMAZON_BASE_URL", raising=False)
    assert resolve_source("amazon2023:Video_Games") == (
        "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023"
        "/raw/review_categories/Video_Games.jsonl.gz"
    )
    assert resolve_source("amazon2023:Books").startswith(AMAZON_2023_BASE_URL)


def test_base_url_from_flag_beats_environment(monkeypatch):
    monkeypatch.setenv("SASREC_AMAZON_BASE_URL", "http://env.example/a/")
    url = resolve_source("amazon2023:Software")
    assert url == "http://env.example/a/raw/review_categories/Software.jsonl.gz"
    url = resolve_source("amazon2023:Software", "http://flag.example")
    assert url == "http://flag.example/raw/review_categories/Software.jsonl.gz"


def test_unknown_category_lists_valid_ones():
    with pytest.raises(
        SASRecError, match=r"unknown Amazon Reviews 2023 category 'VideoGames'.*Video_Games"
    ):
        resolve_source("amazon2023:VideoGames")


def test_missing_local_file_is_an_error(tmp_path):
    with pytest.raises(SASRecError, match="not an existing file"):
        resolve_source(str(tmp_path / "nope.jsonl"))


def test_urls_pass_through():
    assert resolve_source("gs://bucket/x.jsonl.gz") == "gs://bucket/x.jsonl.gz"
    assert resolve_source("https://h/x.txt") == "https://h/x.txt"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Video_Games.jsonl.gz", REVIEWS_JSONL),
        ("/a/b/reviews.JSONL", REVIEWS_JSONL),
        ("https://h/Video.txt?sig=1", SASREC_TEXT),
    ],
)
def test_format_from_name(name, expected):
    assert detect_format(name) == expected


def test_unknown_format_is_an_error():
    with pytest.raises(SASRecError, match=r"cannot tell the format of 'data\.csv'"):
        detect_format("data.csv")
