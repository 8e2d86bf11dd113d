import pytest

from edgebench.models.memory_model import cache_row_bytes, compute_bytes_estimate, kv_bytes
from edgebench.models.presets import PRESETS

# KV bytes per token at f16, derived independently of the code as 2 (K and V) * n_layer * n_head_kv *
# head_dim * 2 B from each model's published config.json (sources in edgebench/models/presets.py).
FACTS_KV_PER_TOKEN_KIB = {
    "smollm-135m": 22.5, "smollm-360m": 40, "smollm2-1.7b": 192, "qwen1.5-0.5b": 96, "qwen2-0.5b": 12,
    "qwen2.5-1.5b": 28, "llama-3.2-1b": 32, "llama-3.2-3b": 112, "tinyllama-1.1b": 22, "gemma-2-2b": 104,
    "phi-3-mini": 384, "stablelm-2-1.6b": 192, "mobilellm-125m": 22.5,
}


@pytest.mark.parametrize("name,kib", FACTS_KV_PER_TOKEN_KIB.items())
def test_kv_per_token_matches_reference_facts(name, kib):
    p = PRESETS[name]
    per_token = kv_bytes(p.n_layer, 256, p.n_head_kv, p.head_dim) / 256
    assert per_token == kib * 1024 == p.kv_bytes_per_token_f16


def test_quantized_cache_rows_use_block_sizes():
    assert cache_row_bytes("f16", 64) == 128
    assert cache_row_bytes("q8_0", 64) == 2 * 34  # 32 values in 34 bytes
    assert cache_row_bytes("q4_0", 64) == 2 * 18
    with pytest.raises(ValueError):
        cache_row_bytes("q8_0", 48)


def test_kv_pads_context_like_llama_cpp():
    assert kv_bytes(1, 300, 1, 64) == kv_bytes(1, 512, 1, 64) == 512 * 2 * 128
    assert kv_bytes(1, 300, 1, 64, pad=False) == 300 * 2 * 128


def test_qwen2_131k_kv_dominates_like_the_survey():
    # Lu et al. 2024: at long context the KV cache (+compute) takes most of the memory of Qwen2.
    from edgebench.models.memory_model import Shapes, project

    p = PRESETS["qwen2-0.5b"]
    shapes = Shapes(p.name, p, 494_000_000, 494_000_000 * 2, True)
    short, long = project(shapes, 2048), project(shapes, 131072)
    assert long["kv_bytes"] == 131072 * 12 * 1024
    assert long["kv_share"] > 0.5 > short["kv_share"]


def test_compute_estimate_grows_with_context_without_flash_attention():
    a = compute_bytes_estimate(1000, 256, 512, 4, 4096, 512, flash_attn=False)
    b = compute_bytes_estimate(1000, 256, 512, 4, 32768, 512, flash_attn=False)
    assert b > a
    assert compute_bytes_estimate(1000, 256, 512, 4, 32768, 512, flash_attn=True) < b
