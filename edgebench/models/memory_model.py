"""Analytic memory of a decoder: weights, KV cache and compute buffers, from shapes alone.

Used to check the runtime's own figures (KV must agree exactly for f16 / q8_0 caches), to project
memory at contexts nobody has run (`edgebench memory`), and to refuse cases that cannot fit the
device before starting them.

KV (llama.cpp, llama-kv-cache.cpp): per layer, K and V each hold kv_size rows of
n_head_kv * head_dim elements; a row of a quantized type takes blocks of GGML_QUANT_SIZES
(e.g. q8_0: 32 elements in 34 bytes). kv_size is n_ctx padded to 256 (llama-context.cpp).
Sliding-window layers (gemma-2) keep a smaller cache unless swa_full; the projection assumes a
full cache there and says so.

Compute buffers are an *estimate* (the scheduler's graph allocator is not reproduced here): the
largest live activations of one ubatch, dominated by the logits (n_vocab x n_ubatch f32) and, without
flash attention, the KQ matrix (n_ctx x n_ubatch x n_head f32).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgebench.models.shape import ModelShape
from edgebench.records import pad_ctx

# Nominal bits per weight of llama.cpp quant mixes, for projecting a preset never built.
# Measured on the synthetic smollm-135m files (edgebench models inspect); a built file's own
# size is always preferred.
NOMINAL_BPW = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.5625, "Q5_K_M": 5.7, "Q5_K_S": 5.5,
    "Q5_0": 5.5, "Q4_K_M": 4.9, "Q4_K_S": 4.6, "Q4_0": 4.5, "Q3_K_M": 3.9, "Q3_K_S": 3.5, "Q2_K": 3.4,
    "IQ4_NL": 4.5,
}


def cache_row_bytes(cache_type: str, n_elements: int) -> int:
    """Bytes of one cache row of ``n_elements`` values of a ggml type (f16, q8_0, q4_0 ...)."""
    import gguf

    qtype = gguf.GGMLQuantizationType[cache_type.upper()]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if n_elements % block:
        raise ValueError(f"{n_elements} elements are not a whole number of {cache_type} blocks of {block}")
    return n_elements // block * size


def kv_bytes(n_layer: int, n_ctx: int, n_head_kv: int, head_dim: int,
             cache_type_k: str = "f16", cache_type_v: str = "f16", pad: bool = True) -> int:
    """K + V bytes llama.cpp allocates for a context of ``n_ctx`` tokens (padded to 256 if pad)."""
    kv_size = pad_ctx(n_ctx) if pad else n_ctx
    row = n_head_kv * head_dim
    return n_layer * kv_size * (cache_row_bytes(cache_type_k, row) + cache_row_bytes(cache_type_v, row))


def compute_bytes_estimate(n_vocab: int, n_embd: int, n_ff: int, n_head: int, n_ctx: int,
                           n_ubatch: int = 512, flash_attn: bool = True) -> int:
    """Rough size of llama.cpp's CPU compute buffer (f32 activations of one ubatch)."""
    f32 = 4
    n_ubatch = min(n_ubatch, pad_ctx(n_ctx))  # llama.cpp never uses a ubatch larger than the context
    logits = n_vocab * n_ubatch
    ffn = 2 * n_ff * n_ubatch
    attn = 0 if flash_attn else n_head * pad_ctx(n_ctx) * n_ubatch
    hidden = 4 * n_embd * n_ubatch
    return f32 * (logits + max(ffn, attn) + hidden)


@dataclass(frozen=True)
class Shapes:
    """What the projection needs of a model (from a GGUF file or a preset): its shape and the
    size of its weights."""

    name: str  # how the projection is titled ("smollm-135m Q4_K_M", a file's general.name)
    shape: ModelShape
    n_params: int
    weights_bytes: int
    weights_exact: bool  # False when weights_bytes is a nominal-bpw estimate


def project(shapes: Shapes, n_ctx: int, cache_type: str = "f16", n_ubatch: int = 512,
            flash_attn: bool = True, cache_type_v: str | None = None) -> dict:
    s = shapes.shape
    kv = kv_bytes(s.n_layer, n_ctx, s.n_head_kv, s.head_dim, cache_type, cache_type_v or cache_type)
    compute = compute_bytes_estimate(s.n_vocab, s.n_embd, s.n_ff, s.n_head, n_ctx, n_ubatch, flash_attn)
    total = shapes.weights_bytes + kv + compute
    return {
        "model": shapes.name, "n_ctx": pad_ctx(n_ctx), "cache_type": cache_type,
        "weights_bytes": shapes.weights_bytes, "kv_bytes": kv, "compute_bytes": compute,
        "total_bytes": total, "kv_share": kv / total, "weights_exact": shapes.weights_exact,
    }


def shapes_from_gguf(path: str) -> Shapes:
    from edgebench.models.gguf_file import read_gguf_info

    gi = read_gguf_info(path)
    return Shapes(gi.synthetic_preset or gi.name or path, gi, gi.n_params, gi.tensor_bytes, True)


def shapes_from_preset(name: str, quant: str) -> Shapes:
    """A preset's shapes; weights from its built file when the cache has one, else nominal bpw.
    The sliding-window layers of gemma-2 are projected with a full cache (see the module docstring)."""
    from edgebench.models.cache import models_dir
    from edgebench.models.presets import get_preset, preset_n_params
    from edgebench.models.quant_levels import GGUF_QUANTS

    p = get_preset(name)
    built = models_dir() / f"{p.name}-{GGUF_QUANTS.check(quant)}.gguf"
    if built.exists():
        return shapes_from_gguf(str(built))
    n_params = preset_n_params(p)
    bpw = NOMINAL_BPW.get(quant.upper())
    if bpw is None:
        from edgebench.errors import InputError

        raise InputError(f"no nominal size for quant {quant!r}; known: {', '.join(NOMINAL_BPW)}")
    return Shapes(f"{p.name} {quant.upper()}", p, n_params, int(n_params * bpw / 8), False)


def fit_problem(case, device_memory_bytes: int) -> str | None:
    """Why ``case`` cannot fit the device's memory (None if it can, or if it cannot be projected)."""
    if not str(case.model).lower().endswith(".gguf"):
        return None
    shapes = shapes_from_gguf(case.model)
    proj = project(shapes, case.ctx_effective, case.cache_type_k, case.n_ubatch, case.flash_attn != "off", case.cache_type_v)
    if proj["total_bytes"] <= device_memory_bytes:
        return None
    gib = 2**30
    return (f"projected {proj['total_bytes'] / gib:.2f} GiB (weights {proj['weights_bytes'] / gib:.2f} + KV "
            f"{proj['kv_bytes'] / gib:.2f} + compute ~{proj['compute_bytes'] / gib:.2f}) does not fit the device's "
            f"{device_memory_bytes / gib:.2f} GiB: not started")
