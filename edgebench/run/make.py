"""`edgebench models make`: build a preset's synthetic model at quant levels, with a progress bar.

Building runs the backend's writer and llama.cpp's quantizer in this process (there is no sweep to
protect here; `edgebench run` builds in the case's worker instead)."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from edgebench.errors import InputError


def make_models(preset: str, quant: str, out: Path | None, backend: str) -> list[str]:
    """Build (or find in the cache) ``preset`` at each level of the comma list ``quant``; prints
    and returns the paths. ``out`` replaces the model cache folder ($EDGEBENCH_HOME). Blocks."""
    from edgebench.backends import backend_class
    from edgebench.models.presets import get_preset

    get_preset(preset)
    cls = backend_class(backend)
    levels = []
    for q in quant.split(","):
        canon = cls.check_quant(q.strip())
        if canon is None:
            raise InputError(f"unknown quant level {q!r} for {cls.name}; valid: {', '.join(cls.quant_levels)}")
        levels.append(canon)
    old_home = os.environ.get("EDGEBENCH_HOME")
    if out is not None:
        os.environ["EDGEBENCH_HOME"] = str(out)
    paths = []
    try:
        with Progress(console=Console(stderr=True)) as p:
            for q in levels:
                task = p.add_task(f"{preset} {q}", total=None)
                path = cls.build_synthetic(preset, q, progress=lambda d, t: p.update(task, completed=d, total=t))
                p.update(task, completed=1, total=1)
                p.console.print(path)
                paths.append(str(path))
    finally:  # the caller's cache stays its own (in-process callers: tests, scripts)
        if old_home is None:
            os.environ.pop("EDGEBENCH_HOME", None)
        else:
            os.environ["EDGEBENCH_HOME"] = old_home
    return paths
