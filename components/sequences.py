"""Sequences component: interactions to per-user sequences, item vocabulary and splits."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.images import image_uri


@dsl.component(base_image=image_uri("sequences"), install_kfp_package=False)
def sequences(
    interactions: Input[Dataset],
    kcore: int,
    sequences: Output[Dataset],
    sequence_stats: Output[Metrics],
):
    """Build train/valid/test sequences, the item vocabulary and stats.json.

    Args:
        interactions: Output of the download component.
        kcore: Minimum interactions per user and item; 0 disables the filter.
        sequences: Directory of Parquet files and stats.json.
        sequence_stats: The numbers in stats.json.
    """
    import os

    from sasrec.steps import sequences_step

    stats = sequences_step(
        os.path.join(interactions.path, "interactions.parquet"), sequences.path, kcore
    )
    for name, value in stats.items():
        sequence_stats.log_metric(name, value)
