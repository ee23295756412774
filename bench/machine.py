"""The machine a benchmark ran on, for its table rows."""

import os
import platform
from pathlib import Path


def describe_machine() -> str:
    """CPU model and core count, e.g. "AMD EPYC 7B13, 2 cores"."""
    cpuinfo = Path("/proc/cpuinfo")
    model = platform.processor() or platform.machine()
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores"
