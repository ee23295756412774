"""The SASRec paper's Games data (Video.txt) for the benchmarks: where it is, its sequences."""

import sys
from pathlib import Path

from sasrec.data import schema
from sasrec.data.steps import download_step, sequences_step

VIDEO_TXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "sasrec-video" / "Video.txt"


def video_sequences(source: Path, work: Path) -> Path:
    """Run the download and sequences steps on `source` under `work`, no k-core as the paper.

    Exits with a message when `source` is absent: a fresh clone has no ../shared.

    Returns:
        The sequences directory.
    """
    if not source.is_file():
        sys.exit(f"{source} is absent: this benchmark needs ../shared/data")
    download_step(str(source), work / "download", cache_dir=work / "cache")
    sequences_step(work / "download" / schema.INTERACTIONS_FILE, work / "seq", kcore=0)
    return work / "seq"
