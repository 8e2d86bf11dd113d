"""One model in two runtimes: a GGUF's own weights as an ONNX decoder (models/gguf_to_onnx.py),
checked against llama.cpp running the same weights (real llama.cpp, real onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgebench.analysis.quality import log_softmax
from edgebench.backends.llama_cpp import LlamaCppBackend
from edgebench.backends.onnxruntime import OnnxRuntimeBackend
from edgebench.errors import InputError
from edgebench.models import gguf_to_onnx
from edgebench.models.gguf_to_onnx import _unpermute, ensure_onnx_from_gguf
from edgebench.models.requant import ensure_requantized
from edgebench.records import Case

TEXT = ("The capital of France is Paris. It is known for the Eiffel Tower, museums such as the Louvre, "
        "and its cafes. Many tourists visit every year to see")


# About 300 tokens of plain English for the level-vs-level checks (the second half is scored).
PROSE = ("The old mill stood at the bend of the river, where the water slowed and grew deep before it ran "
         "over the stones toward the village. For more than a hundred years the miller and his family had "
         "ground the grain that the farmers brought down from the hills, and every autumn the road was full "
         "of carts. When the railway came, the farmers began to send their wheat to the large mills in the "
         "city, and the old wheel turned less and less. The last miller was a quiet man who kept bees and "
         "repaired clocks in the winter. He liked to say that a clock and a mill were the same machine: both "
         "took a steady force and turned it into something useful, and both needed someone who listened to "
         "them. Children from the school would visit him on Fridays. He showed them how the gears fit "
         "together, how the stones were dressed with a hammer and a chisel, and how the flow of the water "
         "could be measured with a stick, a watch and a little patience. Years later, when the mill became a "
         "museum, many of those children came back as parents and told their own children the stories they "
         "had heard. The wheel still turns on summer weekends, and the bread baked from its flour is sold in "
         "the small shop by the door. Visitors often ask why anyone would keep such a slow machine running. "
         "The answer on the sign near the river is simple: because it still works, and because it reminds us "
         "how much care went into the things that fed us.")


def _logits(cls, model, tokens) -> np.ndarray:
    b = cls()
    try:
        b.load(Case(backend=cls.name, model=str(model), n_prompt=64, n_gen=1, n_threads=2, n_ctx=256))
        return b.logits(tokens).astype(np.float64)
    finally:
        b.close()


def _compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(max |logit difference|, mean KL(a || b) over positions, share of same top-1)."""
    pa, pb = log_softmax(a), log_softmax(b)
    kl = (np.exp(pa) * (pa - pb)).sum(-1)
    return float(np.abs(a - b).max()), float(kl.mean()), float((a.argmax(-1) == b.argmax(-1)).mean())


def test_unpermute_inverts_convert_hf_to_gguf_permute():
    # convert_hf_to_gguf.py LlamaModel.permute, as written there
    def permute(w, n_head):
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    w = np.random.default_rng(0).standard_normal((3 * 8, 5))
    np.testing.assert_array_equal(_unpermute(permute(w, 3), 3), w)
    b = np.arange(24.0)
    np.testing.assert_array_equal(_unpermute(permute(b, 3), 3), b)


def test_real_smollm2_fp32_matches_llama_cpp_f16(real_gguf):
    """The conversion is right: same tokens, ONNX fp32 (the Q4_1 file dequantized) against llama.cpp
    running the same weights at F16 (the Q4_1 file dequantized to F16 by llama.cpp).

    What differs is F16 rounding only: the F16 file rounds each dequantized weight to 11 bits
    (relative error <= 2^-11 = 4.9e-4), and llama.cpp's CPU F16 matmul rounds the activations to F16
    too; over 30 layers that moves logits by a few 1e-2 (measured: max 0.053 on logits spanning
    -34..30, KL 4e-6 nats). The bounds, 0.25 and 1e-4, leave 5x and 20x margin; a wrong rotary
    layout (Q/K not un-permuted) or a wrong norm eps / rope theta moves logits by whole units and
    KL past 0.1. (Against the Q4_1 file itself the gap is larger, max ~1.3 and KL ~3e-3, because
    llama.cpp quantizes the activations to Q8_1 for Q4_1 dot products: not a tight check.)"""
    onnx_fp32 = ensure_onnx_from_gguf(real_gguf, "fp32")
    f16 = ensure_requantized(real_gguf, "F16")
    lb = LlamaCppBackend()
    try:
        lb.load(Case(backend="llama-cpp", model=str(f16), n_prompt=64, n_gen=1, n_threads=2, n_ctx=256))
        tokens = lb.tokenize(TEXT)
        ref = lb.logits(tokens).astype(np.float64)
    finally:
        lb.close()
    got = _logits(OnnxRuntimeBackend, onnx_fp32, tokens)
    max_diff, kl, same = _compare(ref, got)
    print(f"\nSmolLM2-135M, {len(tokens)} tokens: ONNX fp32 vs llama.cpp F16: max |dlogit| {max_diff:.4f}, "
          f"KL {kl:.2e} nats, same top-1 {same:.3f}")
    assert max_diff < 0.25 and kl < 1e-4 and same == 1.0

    meta = {e.key: e.value for e in onnx.load_model(str(onnx_fp32), load_external_data=False).metadata_props}
    assert meta["edgebench.requantized_from"] == "Q4_1" and meta["edgebench.synthetic"] == "0"
    assert meta["edgebench.source_name"] == real_gguf.name and len(meta["edgebench.source_sha256"]) == 64
    assert meta["edgebench.n_vocab"] == "49152" and meta["edgebench.eos_token_id"] == "2"
    assert meta["edgebench.add_bos_token"] == "0" and "edgebench.bos_token_id" not in meta  # llama.cpp adds none


def test_tiny_llama_gqa_levels_match_llama_cpp(tiny_gguf):
    """The `tiny` preset's F16 GGUF (GQA: 4 heads, 2 KV heads; untied output) in both runtimes, and
    its ONNX levels quantized from the converted fp32."""
    tokens = [int(t) for t in np.random.default_rng(3).integers(0, 512, 40)]
    ref = _logits(LlamaCppBackend, tiny_gguf["F16"], tokens)
    fp32 = ensure_onnx_from_gguf(tiny_gguf["F16"], "fp32")
    max_diff, kl, same = _compare(ref, _logits(OnnxRuntimeBackend, fp32, tokens))
    assert max_diff < 0.05 and kl < 1e-4, (max_diff, kl)
    for q in ("int8", "int4-b32"):
        path = ensure_onnx_from_gguf(tiny_gguf["F16"], q)
        assert path.parent == fp32.parent and path.name == f"{fp32.stem.rsplit('-', 1)[0]}-{q}.onnx"
        assert np.isfinite(_logits(OnnxRuntimeBackend, path, tokens[:8])).all()
    assert ensure_onnx_from_gguf(tiny_gguf["F16"], "fp32") == fp32  # cached


def test_prefill_keeps_the_last_position_only_and_logits_keep_all(tiny_gguf):
    path = ensure_onnx_from_gguf(tiny_gguf["F16"], "fp32")
    tokens = list(range(10, 30))
    b = OnnxRuntimeBackend()
    try:
        b.load(Case(backend="onnxruntime", model=str(path), n_prompt=20, n_gen=1, n_threads=2))
        b.prefill(tokens)
        assert b._logits.shape() == [1, 1, 512]  # lm_head ran on one position
        last = b.last_logits()
        every = b.logits(tokens)
        assert every.shape == (20, 512)
        np.testing.assert_allclose(every[-1], last, rtol=1e-5, atol=1e-5)
        b.decode_step(5)  # the timed session is back, on the same cache
        assert b._logits.shape() == [1, 1, 512] and b.kv_used_bytes() == 21 * 2 * 2 * 2 * 64 * 4
    finally:
        b.close()


def test_unsupported_architecture_is_an_input_error(tmp_path):
    import gguf

    path = tmp_path / "phi.gguf"
    w = gguf.GGUFWriter(str(path), "phi3")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(InputError, match="architecture 'phi3' cannot be converted to ONNX; supported: llama, qwen2"):
        ensure_onnx_from_gguf(path, "fp32", cache=tmp_path)
    assert gguf_to_onnx.SUPPORTED_ARCHS == ("llama", "qwen2")


def test_models_make_from_gguf_for_onnxruntime(tiny_gguf, tmp_path, capsys):
    from edgebench.run.make import make_requantized

    paths = make_requantized(tiny_gguf["Q8_0"], "fp32,INT8", tmp_path, backend="onnxruntime")
    assert [p.rsplit("-", 1)[-1] for p in paths] == ["fp32.onnx", "int8.onnx"]
    assert [Path(p).parent for p in paths] == [tmp_path, tmp_path]  # into the folder itself
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(p).name for p in paths)  # and nothing else
    assert "requantized from Q8_0" in capsys.readouterr().err
    with pytest.raises(InputError, match="unknown onnx quant level 'Q4_K_M'"):
        make_requantized(tiny_gguf["Q8_0"], "Q4_K_M", tmp_path, backend="onnxruntime")


@pytest.fixture(scope="module")
def prose_tokens(real_gguf) -> list[int]:
    lb = LlamaCppBackend()
    try:
        lb.load(Case(backend="llama-cpp", model=str(ensure_requantized(real_gguf, "F16")), n_prompt=64, n_gen=1,
                     n_threads=2, n_ctx=512))
        return lb.tokenize(PROSE)[:256]
    finally:
        lb.close()


def _scored_kl(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean KL(ref || got) over the second half of the positions, as the quality pass scores a chunk."""
    half = len(ref) // 2
    return _compare(ref[half:], got[half:])[1]


def test_real_smollm2_onnx_levels_lose_what_llama_cpp_levels_of_the_same_format_lose(real_gguf, prose_tokens):
    """int8 is llama.cpp's Q8_0 (int8 blocks of 32, activations quantized per block in the dot) and
    int4-b32 is Q4_0 (symmetric 4-bit blocks of 32, the output / tied embedding kept at 8 / 6 bits):
    on the same tokens each ONNX level's KL against ONNX fp32 is near its llama.cpp twin's KL against
    F16 (fp32 and F16 agree to KL ~1e-5, test_real_smollm2_fp32_matches_llama_cpp_f16).

    Measured here (256 tokens, 128 scored): int8 0.0043 vs Q8_0 0.0040; int4-b32 0.283 vs Q4_0 0.288.
    The recipe before models.onnx_quant (quantize_dynamic: per-tensor uint8 activations, per-tensor
    weights) gave int8 0.52, 129x Q8_0, and int4-b32 without the 8-bit lm_head 0.39, 1.36x Q4_0:
    the bounds (int8 under 0.02 and 2x Q8_0, int4-b32 under 1.25x Q4_0) fail on both."""
    tokens = prose_tokens
    f16 = _logits(LlamaCppBackend, ensure_requantized(real_gguf, "F16"), tokens)
    fp32 = _logits(OnnxRuntimeBackend, ensure_onnx_from_gguf(real_gguf, "fp32"), tokens)
    kl = {q: _scored_kl(f16, _logits(LlamaCppBackend, ensure_requantized(real_gguf, q), tokens)) for q in ("Q8_0", "Q4_0")}
    kl |= {q: _scored_kl(fp32, _logits(OnnxRuntimeBackend, ensure_onnx_from_gguf(real_gguf, q), tokens))
           for q in ("int8", "int4-b32")}
    print("\nSmolLM2-135M, mean KL over 128 scored tokens: " + ", ".join(f"{q} {v:.4f}" for q, v in kl.items()))
    assert kl["int8"] < 0.02 and kl["int8"] < 2 * kl["Q8_0"], kl
    assert kl["int4-b32"] < 1.25 * kl["Q4_0"], kl
