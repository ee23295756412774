"""Sequences component: interactions to per-user sequences, item vocabulary and splits."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from components.images import image_uri


@dsl.component(base_image=image_uri("sequences"), install_kfp_package=False)
def sequences(
    interactions: Input[Dataset],
    kcore: int,
    split: str,
    sequences: Output[Dataset],
    sequence_stats: Output[Metrics],
    report: Output[HTML],
):
    """Build train/valid/test sequences, the item vocabulary and stats.json.

    Args:
        interactions: Output of the download component.
        kcore: Minimum interactions per user and item; 0 disables the filter.
        split: leave_one_out, or timestamp (the Amazon Reviews 2023 benchmark's cut points).
        sequences: Directory of Parquet files and stats.json.
        sequence_stats: The numbers in stats.json.
        report: Sequence lengths and item popularity, plotted.
    """
    import os
    import shutil

    from sasrec.data.steps import sequences_step
    from sasrec.errors import exit_on_error
    from sasrec.filenames import INTERACTIONS_FILE, REPORT_FILE

    with exit_on_error("sequences"):
        stats = sequences_step(
            os.path.join(interactions.path, INTERACTIONS_FILE), sequences.path, kcore, split
        )
    for name, value in stats.items():
        if isinstance(value, int | float):  # metrics are numbers; the split name is not
            sequence_stats.log_metric(name, value)
    shutil.copyfile(os.path.join(sequences.path, REPORT_FILE), report.path)
