"""The download step: fetch a source into a local cache and convert it to Parquet."""

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

import polars as pl
import requests
import tenacity
from tqdm.auto import tqdm

from sasrec.data.readers import convert_to_interactions
from sasrec.data.sources import SourceFile, detect_format, is_remote, resolve_source_files
from sasrec.errors import SASRecError
from sasrec.io import atomic_path
from sasrec.storage import is_object_store, redact

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "SASREC_CACHE_DIR"
_CHUNK_BYTES = 1 << 20
_HTTP_CHUNK_BYTES = 1 << 16
DOWNLOAD_ATTEMPTS = 5
RETRY_BACKOFF_SECONDS = 1.0  # then 2, 4, 8 ... seconds between attempts


def default_cache_dir() -> Path:
    """$SASREC_CACHE_DIR, else $XDG_CACHE_HOME/sasrec, else ~/.cache/sasrec.

    Read when called, not at import: a pod may have no writable (or no) home directory, and
    the pipeline points the variable at the task's own scratch volume.
    """
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    xdg_cache = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg_cache) / "sasrec" if xdg_cache else Path.home() / ".cache" / "sasrec"


def download_interactions(
    source: str,
    out_path: str | Path,
    amazon_base_url: str | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, int]:
    """Fetch `source` and write it to `out_path` as Parquet (`schema.INTERACTIONS_SCHEMA`).

    The files of an official split are labelled train/valid/test in the `split` column and
    written one after the other.

    Args:
        source: See `sources.resolve_source_files`.
        out_path: The Parquet file to write (atomically).
        amazon_base_url: Mirror of the Amazon Reviews 2023 files.
        cache_dir: Where downloaded files are kept, so a second run downloads nothing;
            None for `default_cache_dir()`.

    Returns:
        Counts for the step's stats: `num_interactions`, `num_lines`, `num_malformed_lines`.
    """
    files = resolve_source_files(source, amazon_base_url)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    local_files = [fetch_source_file(file, cache_dir) for file in files]
    with atomic_path(out_path) as tmp:
        if len(files) == 1:
            counts = _convert(files[0], local_files[0], tmp)
        else:
            with tempfile.TemporaryDirectory(dir=tmp.parent) as parts_dir:
                parts = [Path(parts_dir) / f"{file.split}.parquet" for file in files]
                part_counts = [
                    _convert(file, local, part)
                    for file, local, part in zip(files, local_files, parts, strict=True)
                ]
                pl.concat([pl.scan_parquet(part) for part in parts]).sink_parquet(tmp)
            counts = {key: sum(c[key] for c in part_counts) for key in part_counts[0]}
    log.info("wrote %s to %s", counts, out_path)
    return counts


def fetch_source_file(file: SourceFile, cache_dir: Path) -> Path:
    """The local copy of a source file: the cached download of a URL, or the path itself."""
    return (
        fetch_to_cache(file.location, cache_dir)
        if is_remote(file.location)
        else Path(file.location)
    )


def _convert(file: SourceFile, local_file: Path, out_path: Path) -> dict[str, int]:
    file_format = detect_format(file.location, local_file)
    return convert_to_interactions(local_file, file_format, out_path, file.split)


def cache_path(url: str, cache_dir: Path) -> Path:
    """Where `url` is cached: its file name under a folder named by a hash of the URL."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir / "downloads" / digest / Path(urlparse(url).path).name


def expected_sha256(url: str) -> str | None:
    """The checksum a URL carries in a `#sha256=<hex>` fragment (pip's convention), if any."""
    fragment = urlparse(url).fragment
    return fragment.removeprefix("sha256=").lower() if fragment.startswith("sha256=") else None


def fetch_to_cache(url: str, cache_dir: Path) -> Path:
    """Download `url` into the cache unless it is there already; return the local file.

    An interrupted download leaves `<file>.part` in the cache, which the next attempt (or
    the next run) continues with an HTTP Range request.

    Raises:
        SASRecError: on a 4xx answer, after the retries of transient failures are spent, or
            when the file does not match the URL's `#sha256=` checksum.
    """
    local_file = cache_path(url.split("#", 1)[0], cache_dir)
    if local_file.is_file():
        log.info("using cached %s for %s", local_file, redact(url))
        return local_file
    partial = local_file.with_name(local_file.name + ".part")
    partial.parent.mkdir(parents=True, exist_ok=True)
    if is_object_store(url):
        with atomic_path(local_file) as tmp:
            _fetch_object(url, tmp)
        return local_file
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientDownloadError),
        stop=tenacity.stop_after_attempt(DOWNLOAD_ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=RETRY_BACKOFF_SECONDS, max=60),
        before_sleep=lambda state: log.warning(
            "download of %s: %s; retrying (attempt %d of %d)",
            redact(url),
            state.outcome.exception(),
            state.attempt_number + 1,
            DOWNLOAD_ATTEMPTS,
        ),
        reraise=True,
    )
    try:
        retrying(_fetch_http_resuming, url.split("#", 1)[0], partial)
    except TransientDownloadError as err:
        raise SASRecError(
            f"download of {redact(url)} failed after {DOWNLOAD_ATTEMPTS} attempts: {err}; the "
            f"partial file {partial} is kept and the next run continues it"
        ) from err
    checksum = expected_sha256(url)
    if checksum:
        actual = file_sha256(partial)
        if actual != checksum:
            partial.unlink()
            raise SASRecError(
                f"download of {redact(url)} has sha256 {actual}, expected {checksum}; the file was "
                "deleted, check the URL or the checksum"
            )
    os.replace(partial, local_file)
    return local_file


class TransientDownloadError(Exception):
    """A failure worth retrying: connection dropped or refused, 5xx answer, short body."""


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_http_resuming(url: str, partial: Path) -> None:
    """One attempt: continue `partial` from its current size (or start it) until complete."""
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with requests.get(url, stream=True, timeout=60, headers=headers) as response:
            if response.status_code == 416:  # nothing left past offset: start over
                partial.unlink()
                raise TransientDownloadError(f"range {offset}- not satisfiable")
            if response.status_code >= 500:
                raise TransientDownloadError(f"HTTP {response.status_code} {response.reason}")
            if response.status_code >= 400:
                raise SASRecError(
                    f"download of {redact(url)} failed: HTTP {response.status_code} "
                    f"{response.reason}; "
                    "check the URL (or --amazon-base-url / $SASREC_AMAZON_BASE_URL)"
                )
            resumed = response.status_code == 206
            if offset and not resumed:
                log.info(
                    "%s does not support ranges: downloading it again from the start", redact(url)
                )
                offset = 0
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length else None
            # Small chunks: a dropped connection loses at most one unwritten chunk.
            chunks = response.iter_content(_HTTP_CHUNK_BYTES)
            _write_chunks(chunks, partial, url, total, offset)
    except (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
    ) as err:
        raise TransientDownloadError(str(err)) from err
    size = partial.stat().st_size
    if total is not None and size != total:
        raise TransientDownloadError(f"got {size} of {total} bytes")


def _fetch_object(url: str, dest: Path) -> None:
    """Copy a gs:// or s3:// object (gcsfs, s3fs through fsspec) to `dest`."""
    import fsspec

    from sasrec.storage import explained

    with explained(url, "download"):  # any other failure of the store: one line
        try:
            with fsspec.open(url, "rb") as src:
                chunks = iter(lambda: src.read(_CHUNK_BYTES), b"")
                _write_chunks(chunks, dest, url, getattr(src, "size", None))
        except FileNotFoundError as err:
            raise SASRecError(f"download of {url} failed: no such object; check the URL") from err
        except PermissionError as err:
            raise SASRecError(
                f"download of {url} was refused ({err}); check the credentials (the pipeline's "
                "storage_secret, AWS_* variables, or the pod's service account)"
            ) from err


def _write_chunks(
    chunks: Iterable[bytes], dest: Path, url: str, total: int | None, offset: int = 0
) -> None:
    """Write a byte stream to `dest` from byte `offset` on, with a progress bar.

    The bar shows bytes, rate and ETA; offset 0 truncates the file.
    """
    name = Path(urlparse(url).path).name
    progress = tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=name
    )
    with dest.open("r+b" if offset else "wb") as out, progress as bar:
        out.seek(offset)
        out.truncate()
        for chunk in chunks:
            out.write(chunk)
            bar.update(len(chunk))
