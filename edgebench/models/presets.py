"""Shapes of public small language models, for shape-faithful synthetic models.

One place for these facts: the GGUF writer (edgebench.synth), the ONNX writer, the memory
projection and the reports all read them from here.

Sources (config.json of each model, as vendored in mlc-ai/mlc-llm
python/mlc_llm/model/model_preset.py @ d1ea69a, facebookresearch/MobileLLM configs/*/config.json,
and the Qwen2 / Qwen2.5 HF configs and model cards), collected in shared/reference/facts.md.
``published_params`` is the parameter count the model's authors (or llama.cpp, for Qwen1.5-0.5B)
publish; the presets are tested to reproduce it within 1%.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgebench.errors import InputError


@dataclass(frozen=True)
class Preset:
    name: str
    arch: str  # llama.cpp architecture name written to general.architecture
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    tied: bool  # output matrix shares the token embedding
    n_ctx_train: int
    published_params: float  # parameters, as published (see module docstring)
    source: str
    qkv_bias: bool = False  # qwen2 family, stablelm-2
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    partial_rotary: float = 1.0  # stablelm-2 rotates 25% of each head
    sliding_window: int = 0  # gemma-2 local layers

    @property
    def kv_bytes_per_token_f16(self) -> int:
        return 2 * self.n_layer * self.n_head_kv * self.head_dim * 2


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
        raise InputError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None


def is_preset(name: str) -> bool:
    return name.lower() in PRESETS
