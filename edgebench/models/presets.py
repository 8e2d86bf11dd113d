"""Shapes of public small language models, for shape-faithful synthetic models.

One place for these facts: the GGUF writer (models.synth_gguf), the ONNX writer, the memory
projection and the reports all read them from here, and the tensors each preset's GGUF holds
(preset_tensor_shapes) with the parameter count they make (preset_n_params).

Sources (config.json of each model, as vendored in mlc-ai/mlc-llm
python/mlc_llm/model/model_preset.py @ d1ea69a, facebookresearch/MobileLLM configs/*/config.json,
and the Qwen2 / Qwen2.5 HF configs and model cards).
``published_params`` is the parameter count the model's authors (or llama.cpp, for Qwen1.5-0.5B)
publish; the presets are tested to reproduce it within 1%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgebench.errors import InputError, did_you_mean
from edgebench.models.shape import ModelShape

ARCHS = ("llama", "qwen2", "gemma2", "phi3", "stablelm")  # the architectures synth_gguf can write


@dataclass(frozen=True)
class Preset(ModelShape):
    """A public model's shape (arch: the llama.cpp architecture written to general.architecture),
    and what the shape alone does not say."""

    published_params: float  # parameters, as published (see module docstring)
    source: str
    qkv_bias: bool = False  # qwen2 family, stablelm-2
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    partial_rotary: float = 1.0  # stablelm-2 rotates 25% of each head
    sliding_window: int = 0  # gemma-2 local layers


_MLC = "mlc-ai/mlc-llm model_preset.py @ d1ea69a (HF config.json)"
_MOBILELLM = "facebookresearch/MobileLLM configs/*/config.json; paper counts with shared embeddings"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("smollm-135m", "llama", 576, 30, 9, 3, 64, 1536, 49152, True, 2048, 134.5e6, _MLC),
        Preset("smollm-360m", "llama", 960, 32, 15, 5, 64, 2560, 49152, True, 2048, 361.8e6, _MLC),
        Preset("smollm2-1.7b", "llama", 2048, 24, 32, 32, 64, 8192, 49152, True, 8192, 1711e6, _MLC,
               rope_theta=130000.0),
        Preset("qwen2-0.5b", "qwen2", 896, 24, 14, 2, 64, 4864, 151936, True, 131072, 494e6,
               "rwth-i6/i6_experiments copy of Qwen/Qwen2-0.5B config.json", qkv_bias=True,
               rope_theta=1e6, norm_eps=1e-6),
        Preset("qwen2.5-0.5b", "qwen2", 896, 24, 14, 2, 64, 4864, 151936, True, 32768, 494e6,
               "Qwen/Qwen2.5-0.5B config.json and model card (0.49B)", qkv_bias=True,
               rope_theta=1e6, norm_eps=1e-6),
        Preset("qwen2.5-1.5b", "qwen2", 1536, 28, 12, 2, 128, 8960, 151936, True, 32768, 1544e6,
               "Qwen/Qwen2.5-1.5B config.json and model card (1.54B)", qkv_bias=True,
               rope_theta=1e6, norm_eps=1e-6),
        # llama.cpp counts 620M for Qwen1.5-0.5B (Lu et al. 2024, Fig. 8): an untied output matrix.
        Preset("qwen1.5-0.5b", "qwen2", 1024, 24, 16, 16, 64, 2816, 151936, False, 32768, 620e6,
               _MLC + "; untied per llama.cpp's 620M count", qkv_bias=True, rope_theta=1e6,
               norm_eps=1e-6),
        Preset("llama-3.2-1b", "llama", 2048, 16, 32, 8, 64, 8192, 128256, True, 131072, 1236e6, _MLC,
               rope_theta=500000.0),
        Preset("llama-3.2-3b", "llama", 3072, 28, 24, 8, 128, 8192, 128256, True, 131072, 3213e6, _MLC,
               rope_theta=500000.0),
        Preset("tinyllama-1.1b", "llama", 2048, 22, 32, 4, 64, 5632, 32000, False, 2048, 1100e6, _MLC),
        Preset("phi-3-mini", "phi3", 3072, 32, 32, 32, 96, 8192, 32064, False, 4096, 3821e6, _MLC),
        Preset("gemma-2-2b", "gemma2", 2304, 26, 8, 4, 256, 9216, 256000, True, 8192, 2614e6, _MLC,
               norm_eps=1e-6, sliding_window=4096),
        Preset("stablelm-2-1.6b", "stablelm", 2048, 24, 32, 32, 64, 5632, 100352, False, 4096, 1644e6,
               _MLC, qkv_bias=True, partial_rotary=0.25),
        Preset("mobilellm-125m", "llama", 576, 30, 9, 3, 64, 1536, 32000, True, 2048, 124.6e6, _MOBILELLM),
        # For tests: every dimension a multiple of 256 so that every K-quant applies.
        Preset("tiny", "llama", 256, 2, 4, 2, 64, 512, 512, False, 2048, 0.0, "edgebench test model"),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise InputError(f"unknown preset {name!r}{did_you_mean(name, PRESETS)}; presets: {', '.join(PRESETS)}") from None


def is_preset(name: str) -> bool:
    return name.lower() in PRESETS


def preset_tensor_shapes(p: Preset) -> dict[str, tuple[int, ...]]:
    """Every tensor of the preset's GGUF, in file order: name -> shape in ggml order (ne[0], the
    row length, first), exactly as the arch's load_arch_tensors() creates them in llama.cpp
    (checked against the vendored src/models/{llama,qwen2,gemma2,phi3,stablelm}.cpp)."""
    if p.arch not in ARCHS:
        raise InputError(f"preset {p.name}: architecture {p.arch!r} not supported; supported: {', '.join(ARCHS)}")
    E, V, F, D = p.n_embd, p.n_vocab, p.n_ff, p.head_dim
    q_dim, kv_dim = p.n_head * D, p.n_head_kv * D
    if p.arch in ("qwen2", "phi3", "stablelm") and q_dim != E:
        # these archs create attn_q / attn_output as {n_embd, n_embd}
        raise ValueError(f"{p.name}: {p.arch} needs n_head*head_dim == n_embd, got {q_dim} != {E}")
    if p.arch == "gemma2" and not p.tied:
        raise ValueError(f"{p.name}: gemma2 always ties the output to token_embd in llama.cpp")
    if p.arch == "stablelm" and p.tied:
        raise ValueError(f"{p.name}: stablelm requires an output.weight tensor in llama.cpp")
    layer_norm = p.arch == "stablelm"  # LayerNorm with bias; the others use RMSNorm (weight only)

    s: dict[str, tuple[int, ...]] = {"token_embd.weight": (E, V)}
    for i in range(p.n_layer):
        b = f"blk.{i}."
        s[b + "attn_norm.weight"] = (E,)
        if layer_norm:
            s[b + "attn_norm.bias"] = (E,)
        if p.arch == "phi3":  # fused QKV, as Phi-3's checkpoint stores it
            s[b + "attn_qkv.weight"] = (E, q_dim + 2 * kv_dim)
        else:
            s[b + "attn_q.weight"] = (E, q_dim)
            s[b + "attn_k.weight"] = (E, kv_dim)
            s[b + "attn_v.weight"] = (E, kv_dim)
            if p.qkv_bias:
                s[b + "attn_q.bias"] = (q_dim,)
                s[b + "attn_k.bias"] = (kv_dim,)
                s[b + "attn_v.bias"] = (kv_dim,)
        s[b + "attn_output.weight"] = (q_dim, E)
        if p.arch == "gemma2":
            s[b + "post_attention_norm.weight"] = (E,)
        s[b + "ffn_norm.weight"] = (E,)
        if layer_norm:
            s[b + "ffn_norm.bias"] = (E,)
        if p.arch == "phi3":  # fused gate+up: {n_embd, 2*n_ff}
            s[b + "ffn_up.weight"] = (E, 2 * F)
        else:
            s[b + "ffn_gate.weight"] = (E, F)
            s[b + "ffn_up.weight"] = (E, F)
        s[b + "ffn_down.weight"] = (F, E)
        if p.arch == "gemma2":
            s[b + "post_ffw_norm.weight"] = (E,)
    s["output_norm.weight"] = (E,)
    if layer_norm:
        s["output_norm.bias"] = (E,)
    if not p.tied:
        s["output.weight"] = (E, V)
    return s


def preset_n_params(p: Preset) -> int:
    """Parameters of the preset's GGUF (a tied output matrix counted once), from preset_tensor_shapes."""
    return sum(math.prod(shape) for shape in preset_tensor_shapes(p).values())
