import pytest

from sasrec.data.sources import (
    AMAZON_2023_BASE_URL,
    BENCHMARK_CSV,
    RECBOLE_INTER,
    REVIEWS_JSONL,
    SASREC_TEXT,
    SourceFile,
    detect_format,
    parse_amazon_2023,
    resolve_source,
    resolve_source_files,
)
from sasrec.errors import SASRecError
from sasrec.storage import redact


def test_amazon_category_resolves_to_the_official_raw_reviews_file(monkeypatch):
    monkeypatch.delenv("SASREC_AMAZON_BASE_URL", raising=False)
    assert resolve_source_files("amazon2023:Video_Games") == [
        SourceFile(
            "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023"
            "/raw/review_categories/Video_Games.jsonl.gz"
        )
    ]
    (books,) = resolve_source_files("amazon2023:Books")
    assert books.location.startswith(AMAZON_2023_BASE_URL)


def test_benchmark_files_of_the_official_layout():
    base = "http://m.example"
    assert resolve_source_files("amazon2023:Books:5core", base) == [
        SourceFile(f"{base}/benchmark/5core/rating_only/Books.csv.gz")
    ]
    assert resolve_source_files("amazon2023:Books:0core/rating_only", base) == [
        SourceFile(f"{base}/benchmark/0core/rating_only/Books.csv.gz")
    ]
    assert resolve_source_files("amazon2023:Books:5core/timestamp_w_his", base) == [
        SourceFile(f"{base}/benchmark/5core/timestamp_w_his/Books.{part}.csv.gz", part)
        for part in ("train", "valid", "test")
    ]


def test_base_url_from_flag_beats_environment(monkeypatch):
    monkeypatch.setenv("SASREC_AMAZON_BASE_URL", "http://env.example/a/")
    (file,) = resolve_source_files("amazon2023:Software")
    assert file.location == "http://env.example/a/raw/review_categories/Software.jsonl.gz"
    (file,) = resolve_source_files("amazon2023:Software", "http://flag.example")
    assert file.location == "http://flag.example/raw/review_categories/Software.jsonl.gz"


def test_unknown_category_lists_valid_ones():
    with pytest.raises(
        SASRecError, match=r"unknown Amazon Reviews 2023 category 'VideoGames'.*Video_Games"
    ):
        resolve_source_files("amazon2023:VideoGames")


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
        ("https://h/benchmark/5core/last_out/Books.train.csv.gz", BENCHMARK_CSV),
        ("ml-100k.inter", RECBOLE_INTER),
    ],
)
def test_format_from_name(name, expected):
    assert detect_format(name) == expected


def test_unknown_format_is_an_error():
    with pytest.raises(SASRecError, match=r"cannot tell the format of 'data\.parquet'"):
        detect_format("data.parquet")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://alice:s3cret@host:5000/path?q=1", "http://host:5000/path?q=1"),
        ("https://token@mirror.example/x.jsonl.gz", "https://mirror.example/x.jsonl.gz"),
        ("http://host:5000", "http://host:5000"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("/local/path@2", "/local/path@2"),
    ],
)
def test_redact_drops_credentials_and_keeps_the_rest(uri, expected):
    assert redact(uri) == expected


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("Video_Gamez", "Video_Games"), ("video games", "Video_Games"),
     ("movies_and_tv", "Movies_and_TV"), ("Nope", None)],
)  # fmt: skip
def test_an_unknown_category_says_which_one_was_likely_meant(typed, meant):
    with pytest.raises(SASRecError) as unknown:
        parse_amazon_2023(f"amazon2023:{typed}")
    message = str(unknown.value)
    assert (f"did you mean {meant!r}?" in message) == (meant is not None)
    assert ("did you mean" in message) == (meant is not None)
    assert "the 34 categories: All_Beauty, " in message
