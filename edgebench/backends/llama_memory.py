"""llama.cpp's buffer sizes: parsed from its log lines, and weights counted once.

No public llama.cpp API reports buffer sizes, so parse_buffer_sizes() reads them from the log.
The weights need one more step (split_weights): with mmap, a "<dev>_Mapped" buffer spans the file
range of the tensors it holds, and tensors that an extra buffer type converts to its own layout
(CPU_REPACK: Q4_0, IQ4_NL, Q4_K, Q2_K on AVX2; AMX; KleidiAI) are held a second time in that
buffer while their originals stay in the mapped range. Adding the buffers counts those tensors
twice; llama_model_size (the sum of the model's tensor sizes) counts each once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# "load_tensors:   CPU_Mapped model buffer size =   123.45 MiB"
# "llama_kv_cache:        CPU KV buffer size =     6.00 MiB"
# "llama_context:        CPU compute buffer size =    12.34 MiB"
# "llama_context:        CPU  output buffer size =     0.19 MiB"
_BUF_RE = re.compile(
    r"^\s*(?P<func>[\w:]+):\s+(?P<buf>\S+)\s+(?P<kind>model|KV|compute|output)\s+buffer size\s*=\s*(?P<mib>[\d.]+)\s*MiB"
)
_KIND = {"model": "weights", "KV": "kv", "compute": "compute", "output": "output"}
# Extra buffer types: they hold converted copies of tensors whose originals the mapped file keeps.
_EXTRA_BUFT = ("REPACK", "AMX", "KLEIDIAI")


def parse_buffer_sizes(lines: Sequence[str]) -> dict[str, dict[str, int]]:
    """Buffer sizes in bytes from llama.cpp log lines: {"weights"|"kv"|"compute"|"output": {buffer: bytes}}.

    llama.cpp prints them in MiB with two decimals, so each figure is exact to +-0.005 MiB.
    A buffer type seen twice in one kind (e.g. several KV caches) is summed. Other lines are ignored.
    """
    out: dict[str, dict[str, int]] = {k: {} for k in _KIND.values()}
    for line in lines:
        m = _BUF_RE.match(line)
        if not m:
            continue
        kind = _KIND[m["kind"]]
        b = round(float(m["mib"]) * 1024 * 1024)
        out[kind][m["buf"]] = out[kind].get(m["buf"], 0) + b
    return out


def is_mapped(buf: str) -> bool:
    return buf.endswith("_Mapped")


def is_repack(buf: str) -> bool:
    return any(k in buf.upper() for k in _EXTRA_BUFT)


def split_weights(raw: dict[str, int], model_size: int) -> tuple[dict[str, int], dict[str, int]]:
    """(weights per buffer type, repacked copies per buffer type) from the logged model buffers
    ``raw`` and llama_model_size ``model_size``.

    Weights per buffer type are where each tensor is read from, counted once: every allocated
    buffer (CUDA0, CPU_REPACK, a CPU buffer without mmap) as logged; the mapped buffers the rest,
    model_size minus those, shared in proportion to their logged sizes. Whatever is left (alignment
    padding, the log's 0.01 MiB rounding) goes to the largest buffer, so the values sum to
    model_size exactly. The repacked copies are the extra buffer types' sizes where a mapped buffer
    still holds the originals (memory on top of the weights); none without mmap.
    """
    if not raw or model_size <= 0:
        return dict(raw), {}
    mapped = [b for b in raw if is_mapped(b)]
    weights = {b: v for b, v in raw.items() if not is_mapped(b)}
    rest = max(model_size - sum(weights.values()), 0)
    mapped_total = sum(raw[b] for b in mapped)
    for b in mapped:
        weights[b] = rest * raw[b] // mapped_total if mapped_total else rest // len(mapped)
    largest = max(weights, key=lambda b: weights[b])
    weights[largest] += model_size - sum(weights.values())
    repack = {b: v for b, v in raw.items() if is_repack(b)} if mapped else {}
    return weights, repack
