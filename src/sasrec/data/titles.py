"""Item titles from the Amazon Reviews 2023 item metadata, shown in reports and recommendations.

The metadata file (`raw/meta_categories/meta_<Category>.jsonl.gz`) is fetched by the
download step when asked, reduced to `item_titles.parquet` (item_id, title), carried by the
sequences step for the items it keeps, and copied into the model directory.
"""

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from sasrec.data import schema
from sasrec.data.readers import line_batches, prefetched
from sasrec.data.sources import (
    AMAZON_2023_PREFIX,
    SourceFile,
    amazon_2023_base_url,
    parse_amazon_2023,
)
from sasrec.errors import SASRecError
from sasrec.io import atomic_path

TITLES_SCHEMA = pl.Schema({schema.ITEM_ID: pl.String, schema.TITLE: pl.String})
LABEL_TITLE_CHARS = 40  # a title in a report cell is cut to this many characters


def metadata_file(source: str, amazon_base_url: str | None = None) -> SourceFile:
    """The item metadata file of an `amazon2023:<Category>` source.

    Raises:
        SASRecError: for other sources, which have no known metadata file.
    """
    amazon = parse_amazon_2023(source)
    if amazon is None:
        raise SASRecError(
            f"item titles come from the Amazon Reviews 2023 metadata: --with-metadata needs "
            f"an {AMAZON_2023_PREFIX}<Category> source, not {source!r}"
        )
    base_url = amazon_2023_base_url(amazon_base_url)
    return SourceFile(f"{base_url}/raw/meta_categories/meta_{amazon.category}.jsonl.gz")


def convert_item_titles(path: Path, out_path: Path) -> int:
    """Write (item_id, title) of a metadata JSONL(.gz) file as Parquet; returns the count.

    Raises:
        SASRecError: naming the file and the batch's first line when a batch is not JSON
            objects with a string `parent_asin`.
    """
    read_schema = {"parent_asin": pl.String, "title": pl.String}
    arrow_schema = pl.DataFrame(schema=TITLES_SCHEMA).to_arrow().schema
    count = 0
    with atomic_path(out_path) as tmp, pq.ParquetWriter(tmp, arrow_schema) as writer:
        for batch in prefetched(line_batches(path)):
            try:
                frame = pl.read_ndjson(batch.data, schema=read_schema)
            except pl.exceptions.PolarsError as err:
                first_line = str(err).strip().splitlines()[0]
                raise SASRecError(
                    f"{path}: item metadata is not JSON lines near line {batch.first_line} "
                    f"({first_line})"
                ) from err
            titles = frame.rename({"parent_asin": schema.ITEM_ID}).drop_nulls(schema.ITEM_ID)
            writer.write_table(titles.to_arrow().cast(arrow_schema))
            count += titles.height
    return count


def item_labels(item_ids: list[str], titles_path: Path) -> list[str]:
    """`id` or, where a title is known, `id (title cut to 40 characters)`."""
    if not titles_path.is_file():
        return item_ids
    titles = dict(pl.read_parquet(titles_path).unique(schema.ITEM_ID).rows())
    return [_label(item, titles.get(item)) for item in item_ids]


def _label(item_id: str, title: str | None) -> str:
    if not title:
        return item_id
    short = title if len(title) <= LABEL_TITLE_CHARS else title[: LABEL_TITLE_CHARS - 1] + "…"
    return f"{item_id} ({short})"
