"""edgebench's own cache folder ($EDGEBENCH_HOME, default ~/.cache/edgebench): built synthetic
models under models/, and the sha256 cache of model files (by path, size, mtime). One lock discipline for everything built there."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path


def home(cache: Path | None = None) -> Path:
    """``cache`` if given, else $EDGEBENCH_HOME, else ~/.cache/edgebench."""
    return Path(cache or os.environ.get("EDGEBENCH_HOME") or Path.home() / ".cache" / "edgebench")


def models_dir(cache: Path | None = None) -> Path:
    """Folder of built synthetic models (GGUF and ONNX): ``home(cache)/models``."""
    return home(cache) / "models"


def make_dir(d: Path) -> Path:
    """``d`` created (with its parents) for a build; InputError naming it when that is not possible."""
    from edgebench.errors import InputError

    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the model cache {d}: {e.strerror or e} (set EDGEBENCH_HOME)") from None
    return d


@contextlib.contextmanager
def locked(target: Path) -> Iterator[None]:
    """An exclusive flock on ``<target>.lock``: concurrent builders of one file take turns."""
    with open(target.with_name(target.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cache_file() -> Path:
    return home() / "sha256-cache.json"


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, or of a folder's files in name order (ONNX model folders)."""
    p = Path(path).resolve()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    stamp = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    key = json.dumps(stamp)
    cache_path = _cache_file()
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    digest = h.hexdigest()
    cache[key] = digest
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(cache_path)
    except OSError:
        pass  # a cache we cannot write only costs time
    return digest
