"""Download component: a source to interactions Parquet."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components.images import image_uri


@dsl.component(base_image=image_uri("download"), install_kfp_package=False)
def download(
    source: str,
    amazon_base_url: str,
    with_metadata: bool,
    interactions: Output[Dataset],
    download_stats: Output[Metrics],
):
    """Fetch the reviews of `source` and write them as interactions.parquet.

    Args:
        source: amazon2023:<Category>, an http(s)/gs:// URL or a path the task can read.
        amazon_base_url: Mirror of the Amazon Reviews 2023 files; empty for the default.
        with_metadata: Also fetch the item titles (amazon2023 sources).
        interactions: Directory holding interactions.parquet.
        download_stats: Row counts.
    """
    from sasrec.data.steps import download_step
    from sasrec.errors import exit_on_error

    with exit_on_error("download"):
        counts = download_step(
            source, interactions.path, amazon_base_url or None, with_metadata=with_metadata
        )
    for name, value in counts.items():
        download_stats.log_metric(name, value)
