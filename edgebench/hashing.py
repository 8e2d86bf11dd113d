"""sha256 of model files, cached by (path, size, mtime) so a 4 GB file is hashed once."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from edgebench.cache import home as cache_home


def _cache_file() -> Path:
    return cache_home() / "sha256-cache.json"


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
