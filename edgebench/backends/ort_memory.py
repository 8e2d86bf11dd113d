"""Memory of an onnxruntime session, as close to llama.cpp's buffer split as its Python API allows.

What onnxruntime 1.32's Python API offers (read from its pybind sources and checked on the
installed wheel): arena *configuration* (OrtArenaCfg, create_and_register_allocator,
SessionOptions.enable_cpu_mem_arena / enable_mem_pattern) but no allocator *statistics*: the C
API's KernelInfo/Allocator ``GetStats`` (OrtAllocator stats: InUse, MaxInUse, NumAllocs...) has no
Python binding, and InferenceSession has no get_allocator. So:

- weights: the file's initializer bytes, each tensor once (models.onnx_file.count_weights);
- KV cache: exact, the bytes of the OrtValues bound as past/present (shared-buffer cache), else
  the layout's bytes per token x n_ctx (a concat cache, which onnxruntime grows each step);
- compute: an ESTIMATE, the process RSS growth over one first run of the largest chunk the case
  feeds (n_batch prompt tokens): what the CPU arena and the run's intermediate tensors take on top
  of the loaded weights and the KV cache (the arena keeps what it grew to). Its buffer label says
  ``estimate`` and ModelInfo.extra["compute_bytes_method"] says how; only on the CPU provider (a
  GPU's arena is not in the RSS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections.abc import Sequence

import numpy as np
import psutil

from edgebench.backends.base import MemoryInfo

COMPUTE_METHOD = ("estimate: process RSS growth over a first run of min(n_batch, n_prompt) tokens after the "
                  "session and KV cache are allocated (onnxruntime's Python API has no allocator statistics)")
ESTIMATE_SUFFIX = " (RSS estimate)"


def rss_bytes() -> int:
    """Resident set size of this process now, in bytes, after handing free heap pages back to the
    system (glibc malloc_trim), so a growth measured between two calls is new memory, not pages
    freed earlier (the parsed ONNX proto) and reused."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    return psutil.Process().memory_info().rss


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl): RSS as it is
        return None


_LIBC = _libc()


def bound_kv_bytes(bufs: Sequence, kv_dtype: np.dtype) -> int:
    """Bytes of the KV OrtValues bound as past/present (each buffer once, as allocated)."""
    return sum(math.prod(v.shape()) for v in bufs) * np.dtype(kv_dtype).itemsize


def memory_info(buf: str, *, model_bytes: int, kv_bytes: int, compute_estimate: int | None,
                logits_bytes: int) -> MemoryInfo:
    """MemoryInfo for one buffer type ``buf`` ("CPU" / "CUDA0"); ``compute_estimate`` None: unknown."""
    return MemoryInfo(
        weights_by_buffer={buf: model_bytes},
        kv_by_buffer={buf: kv_bytes},
        compute_by_buffer={buf + ESTIMATE_SUFFIX: compute_estimate} if compute_estimate is not None else {},
        output_by_buffer={buf: logits_bytes} if logits_bytes else {},
    )
