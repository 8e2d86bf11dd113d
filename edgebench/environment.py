"""What makes a number reproducible: versions, CPU, OS, and platform state, for run.json."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

from edgebench import __version__


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    """Physical core count (llama-bench's default thread count)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def collect_environment() -> dict[str, Any]:
    import psutil

    return {
        "edgebench": __version__,
        "python": sys.version.split()[0],
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_physical_cores": physical_cores(),
        "cpu_logical_cores": os.cpu_count(),
        "memory_total_bytes": psutil.virtual_memory().total,
    }
