"""The download step: fetch a source into a local cache and convert it to Parquet."""

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

import polars as pl
import requests
from requests.adapters import HTTPAdapter
from tqdm.auto import tqdm
from urllib3.util.retry import Retry

from sasrec.data import schema
from sasrec.data.sources import REVIEWS_JSONL, SASREC_TEXT, detect_format, is_remote, resolve_source
from sasrec.errors import SASRecError
from sasrec.io import atomic_path

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "sasrec"
_CHUNK_BYTES = 1 << 20


def download_interactions(
    source: str,
    out_path: str | Path,
    amazon_base_url: str | None = None,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
) -> dict[str, int]:
    """Fetch `source` and write it to `out_path` as Parquet (`schema.INTERACTIONS_SCHEMA`).

    Args:
        source: See `sources.resolve_source`.
        out_path: The Parquet file to write (atomically).
        amazon_base_url: Mirror of the Amazon Reviews 2023 files.
        cache_dir: Where downloaded files are kept, so a second run downloads nothing.

    Returns:
        Counts for the step's stats: `num_interactions`.
    """
    location = resolve_source(source, amazon_base_url)
    file_format = detect_format(location)
    local_file = (
        fetch_to_cache(location, Path(cache_dir)) if is_remote(location) else Path(location)
    )
    interactions = read_interactions(local_file, file_format)
    with atomic_path(out_path) as tmp:
        interactions.write_parquet(tmp)
    log.info("wrote %d interactions to %s", interactions.height, out_path)
    return {"num_interactions": interactions.height}


def cache_path(url: str, cache_dir: Path) -> Path:
    """Where `url` is cached: its file name under a folder named by a hash of the URL."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir / "downloads" / digest / Path(urlparse(url).path).name


def fetch_to_cache(url: str, cache_dir: Path) -> Path:
    """Download `url` into the cache unless it is there already; return the local file."""
    local_file = cache_path(url, cache_dir)
    if local_file.is_file():
        log.info("using cached %s for %s", local_file, url)
        return local_file
    with atomic_path(local_file) as tmp:
        if url.startswith("gs://"):
            _fetch_gcs(url, tmp)
        else:
            _fetch_http(url, tmp)
    return local_file


def _http_session() -> requests.Session:
    # Connection errors and 5xx answers are transient: retry them with backoff.
    retry = Retry(total=5, backoff_factor=1.0, status_forcelist=(500, 502, 503, 504))
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    session.mount("https://", HTTPAdapter(max_retries=retry))
    return session


def _fetch_http(url: str, dest: Path) -> None:
    try:
        with _http_session().get(url, stream=True, timeout=60) as response:
            if response.status_code >= 400:
                raise SASRecError(
                    f"download of {url} failed: HTTP {response.status_code} {response.reason}; "
                    "check the URL (or --amazon-base-url / $SASREC_AMAZON_BASE_URL)"
                )
            total = int(response.headers.get("Content-Length", 0)) or None
            _write_chunks(response.iter_content(_CHUNK_BYTES), dest, url, total)
    except requests.RequestException as err:
        raise SASRecError(f"download of {url} failed: {err}") from err
    if total is not None and dest.stat().st_size != total:
        raise SASRecError(
            f"download of {url} is incomplete: {dest.stat().st_size} of {total} bytes; retry"
        )


def _fetch_gcs(url: str, dest: Path) -> None:
    import fsspec  # gcsfs registers gs:// with fsspec

    try:
        with fsspec.open(url, "rb") as src:
            chunks = iter(lambda: src.read(_CHUNK_BYTES), b"")
            _write_chunks(chunks, dest, url, getattr(src, "size", None))
    except FileNotFoundError as err:
        raise SASRecError(f"download of {url} failed: no such object; check the URL") from err


def _write_chunks(chunks: Iterable[bytes], dest: Path, url: str, total: int | None) -> None:
    """Write a byte stream to `dest` with a progress bar (bytes, rate, ETA)."""
    name = Path(urlparse(url).path).name
    with (
        dest.open("wb") as out,
        tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name) as bar,
    ):
        for chunk in chunks:
            out.write(chunk)
            bar.update(len(chunk))


def read_interactions(path: Path, file_format: str) -> pl.DataFrame:
    """Read a local source file into the interactions schema, in file order.

    Raises:
        SASRecError: naming the file when it cannot be parsed or lacks a required field.
    """
    try:
        if file_format == REVIEWS_JSONL:
            frame = _read_reviews_jsonl(path)
        elif file_format == SASREC_TEXT:
            frame = _read_sasrec_text(path)
        else:
            raise SASRecError(f"unsupported format {file_format!r} for {path}")
    except pl.exceptions.PolarsError as err:
        first_line = str(err).strip().splitlines()[0]
        raise SASRecError(f"cannot read {path} as {file_format}: {first_line}") from err
    if frame.is_empty():
        raise SASRecError(f"{path} holds no interactions")
    for column in (schema.USER_ID, schema.ITEM_ID, schema.TIMESTAMP):
        missing = frame[column].null_count()
        if missing:
            raise SASRecError(f"{path}: {missing} rows lack the required field {column!r}")
    return frame


def _read_reviews_jsonl(path: Path) -> pl.DataFrame:
    # Only the needed fields are parsed; Amazon Reviews 2023 identifies items by parent_asin.
    reviews_schema = {
        "user_id": pl.String,
        "parent_asin": pl.String,
        "timestamp": pl.Int64,
        "rating": pl.Float64,
    }
    return (
        pl.scan_ndjson(path, schema=reviews_schema)
        .select(
            pl.col("user_id").alias(schema.USER_ID),
            pl.col("parent_asin").alias(schema.ITEM_ID),
            pl.col("timestamp").alias(schema.TIMESTAMP),
            pl.col("rating").alias(schema.RATING),
        )
        .collect()
    )


def _read_sasrec_text(path: Path) -> pl.DataFrame:
    frame = pl.read_csv(
        path,
        separator=" ",
        has_header=False,
        new_columns=[schema.USER_ID, schema.ITEM_ID],
        schema_overrides=[pl.String, pl.String],
    )
    if frame.width != 2:
        raise SASRecError(f"{path}: expected two space-separated columns `user item` per line")
    # No times in this format: the line number keeps each user's chronological order.
    return frame.select(
        schema.USER_ID,
        schema.ITEM_ID,
        pl.int_range(pl.len(), dtype=pl.Int64).alias(schema.TIMESTAMP),
        pl.lit(None, dtype=pl.Float64).alias(schema.RATING),
    )
