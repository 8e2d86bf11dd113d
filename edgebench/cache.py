"""edgebench's own cache folder ($EDGEBENCH_HOME, default ~/.cache/edgebench): built synthetic
models under models/, and the model-hash cache. One lock discipline for everything built there."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator


def home(cache: Path | None = None) -> Path:
    """``cache`` if given, else $EDGEBENCH_HOME, else ~/.cache/edgebench."""
    return Path(cache or os.environ.get("EDGEBENCH_HOME") or Path.home() / ".cache" / "edgebench")


@contextlib.contextmanager
def locked(target: Path) -> Iterator[None]:
    """An exclusive flock on ``<target>.lock``: concurrent builders of one file take turns."""
    with open(target.with_name(target.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
