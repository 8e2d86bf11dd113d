"""The quality pass's files in $EDGEBENCH_HOME/quality/: compact reference logits and generated
token streams, reused across levels and runs.

- ``ref-<model sha>-<tokens sha>-c<ctx>-k<K>.npz``: the reference model's next-token distributions
  on those tokens, compressed to the top-K log-probs per scored token plus the rest mass
  (edgebench.analysis.quality.compress), with a JSON header ``meta`` (model and tokens sha256, ctx,
  K, n_vocab, chunks, scored tokens).
- ``stream-<model sha>-s<seed>-n<length>.npy``: int32 tokens the reference generated from the seed.

Keys use 16 hex digits of each sha256; the header holds the whole hashes and is checked on read.
Files are written to a temporary name and renamed (a reader never sees half a file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.models.cache import home

ARRAYS = ("top_ids", "top_logp", "rest_logp", "target_logp")


def quality_dir(cache: Path | None = None) -> Path:
    return home(cache) / "quality"


def ref_path(model_sha: str, tokens_sha: str, ctx: int, k: int, cache: Path | None = None) -> Path:
    return quality_dir(cache) / f"ref-{model_sha[:16]}-{tokens_sha[:16]}-c{ctx}-k{k}.npz"


def stream_path(model_sha: str, seed: int, n_tokens: int, cache: Path | None = None) -> Path:
    return quality_dir(cache) / f"stream-{model_sha[:16]}-s{seed}-n{n_tokens}.npy"


def tokens_sha256(tokens: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(tokens, dtype="<i4").tobytes()).hexdigest()


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    tmp.replace(path)


def write_ref(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> int:
    """Write a reference file; returns its size in bytes."""
    meta_arr = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    _atomic(path, lambda f: np.savez(f, meta=meta_arr, **{k: arrays[k] for k in ARRAYS}))
    return path.stat().st_size


def read_meta(path: Path) -> dict[str, Any]:
    with np.load(path) as z:
        return json.loads(z["meta"].tobytes().decode())


def read_ref(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(path) as z:
        meta = json.loads(z["meta"].tobytes().decode())
        return {k: z[k] for k in ARRAYS}, meta


def refs_of(model_sha: str, cache: Path | None = None) -> list[Path]:
    """Every reference file made from this model (any tokens, ctx, K)."""
    d = quality_dir(cache)
    return sorted(d.glob(f"ref-{model_sha[:16]}-*.npz")) if d.is_dir() else []


def write_stream(path: Path, tokens: np.ndarray) -> None:
    _atomic(path, lambda f: np.save(f, np.asarray(tokens, dtype=np.int32)))


def read_stream(path: Path) -> np.ndarray:
    return np.load(path).astype(np.int32)
