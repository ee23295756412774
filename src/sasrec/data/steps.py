"""The download and sequences steps, each one call: what the CLI and their components run.

Nothing here imports torch: the download and sequences images carry none.
"""

from pathlib import Path
from typing import TYPE_CHECKING

from sasrec.data import schema, titles
from sasrec.data.download import default_cache_dir, download_interactions, fetch_source_file
from sasrec.data.sequences import build_sequences

if TYPE_CHECKING:  # torch is imported by the steps that use it: see above
    pass


def download_step(
    source: str,
    out_dir: str | Path,
    amazon_base_url: str | None = None,
    cache_dir: str | Path | None = None,
    with_metadata: bool = False,
) -> dict[str, int]:
    """Fetch `source` and write `out_dir/interactions.parquet`.

    With `with_metadata`, also the category's item titles as `out_dir/item_titles.parquet`.
    Downloads are cached in `cache_dir` (None: `default_cache_dir()`).
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    out_dir = Path(out_dir)
    metadata = titles.metadata_file(source, amazon_base_url) if with_metadata else None
    counts = download_interactions(
        source, out_dir / schema.INTERACTIONS_FILE, amazon_base_url, cache_dir
    )
    if metadata:
        local_file = fetch_source_file(metadata, cache_dir)
        out_path = out_dir / schema.ITEM_TITLES_FILE
        counts["num_item_titles"] = titles.convert_item_titles(local_file, out_path)
    return counts


# The sequences step is the library function itself: the name says which step it is.
sequences_step = build_sequences
