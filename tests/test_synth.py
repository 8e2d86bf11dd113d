"""edgebench.synth: shapes, the writer, llama.cpp's acceptance of every family, the quantizer, the cache."""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import multiprocessing
import os
from pathlib import Path

import pytest

from edgebench.errors import InputError
from edgebench.models import synth_gguf
from edgebench.models.cache import models_dir
from edgebench.models.gguf_file import read_gguf_info, read_metadata, read_tensors
from edgebench.models.presets import PRESETS, preset_n_params, preset_tensor_shapes
from edgebench.models.quant_levels import GGUF_QUANTS

TINY = PRESETS["tiny"]

# Shrunken copies of real presets: same arch, tying, biases, partial rotary, GQA ratio and (for
# gemma-2) attention width != hidden size, tiny dims. vocab 512 holds the 256 byte tokens.
_SMALL = dict(n_layer=2, n_ff=128, n_vocab=512, n_ctx_train=512)
SHRUNK = {
    "llama": dataclasses.replace(PRESETS["llama-3.2-1b"], n_embd=128, n_head=4, n_head_kv=1, head_dim=32, **_SMALL),
    "qwen2": dataclasses.replace(PRESETS["qwen2.5-0.5b"], n_embd=128, n_head=4, n_head_kv=2, head_dim=32, **_SMALL),
    "gemma2": dataclasses.replace(PRESETS["gemma-2-2b"], n_embd=160, n_head=4, n_head_kv=2, head_dim=32,
                                  sliding_window=64, **_SMALL),
    "phi3": dataclasses.replace(PRESETS["phi-3-mini"], n_embd=128, n_head=4, n_head_kv=4, head_dim=32, **_SMALL),
    "stablelm": dataclasses.replace(PRESETS["stablelm-2-1.6b"], n_embd=128, n_head=4, n_head_kv=4, head_dim=32,
                                    **_SMALL),
}


# -- llama.cpp, through the low-level API ---------------------------------------------------------
class _Llama:
    """llama_cpp with its log captured (kept referenced: a collected ctypes callback crashes)."""

    def __init__(self):
        import llama_cpp

        self.ll, self.log = llama_cpp, []
        self._cb = llama_cpp.llama_log_callback(lambda lvl, text, ud: self.log.append(text.decode(errors="replace")))
        llama_cpp.llama_log_set(self._cb, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()

    def load_and_decode(self, path: Path, n_tokens: int = 6) -> dict:
        """Load, make a context, decode a prompt and one more token; llama.cpp's own view of the model."""
        ll = self.ll
        model = ll.llama_model_load_from_file(str(path).encode(), ll.llama_model_default_params())
        assert model, "".join(self.log[-15:])
        try:
            cp = ll.llama_context_default_params()
            cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_threads, cp.n_threads_batch = 128, 32, 32, 2, 2
            ctx = ll.llama_init_from_model(model, cp)
            assert ctx, "".join(self.log[-15:])
            try:
                toks = (ll.llama_token * n_tokens)(*range(3, 3 + n_tokens))
                rc_prompt = ll.llama_decode(ctx, ll.llama_batch_get_one(toks, n_tokens))
                one = (ll.llama_token * 1)(300)
                rc_step = ll.llama_decode(ctx, ll.llama_batch_get_one(one, 1))
                ll.llama_synchronize(ctx)
                n_vocab = ll.llama_vocab_n_tokens(ll.llama_model_get_vocab(model))
                logits = ll.llama_get_logits_ith(ctx, -1)
                finite = all(abs(logits[i]) < 1e30 for i in range(n_vocab))  # no inf / nan
                return {"rc": (rc_prompt, rc_step), "n_params": ll.llama_model_n_params(model),
                        "n_vocab": n_vocab, "n_layer": ll.llama_model_n_layer(model), "finite": finite}
            finally:
                ll.llama_free(ctx)
        finally:
            ll.llama_model_free(model)


@pytest.fixture(scope="module")
def llama():
    return _Llama()


# -- shapes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n, p in PRESETS.items() if p.published_params])
def test_preset_params_match_published(name):
    p = PRESETS[name]
    n = preset_n_params(p)
    assert abs(n / p.published_params - 1) < 0.01, f"{name}: {n / 1e6:.1f}M vs {p.published_params / 1e6:.1f}M"


def test_written_file_has_exactly_the_shapes(tmp_path):
    path = synth_gguf.write_gguf(TINY, tmp_path / "tiny.gguf")
    shapes = preset_tensor_shapes(TINY)
    assert {t.name: t.shape for t in read_tensors(path)} == shapes
    assert read_gguf_info(path).n_params == preset_n_params(TINY)


@pytest.mark.parametrize("arch", sorted(SHRUNK))
def test_every_family_loads_and_decodes_in_llama_cpp(arch, tmp_path, llama):
    p = SHRUNK[arch]
    path = synth_gguf.write_gguf(p, tmp_path / f"{arch}.gguf")
    gi = read_gguf_info(path)
    assert (gi.arch, gi.tied, gi.head_dim) == (arch, p.tied, p.head_dim)
    got = llama.load_and_decode(path)
    assert got["rc"] == (0, 0)
    assert got["finite"]
    assert got["n_params"] == preset_n_params(p) == gi.n_params
    assert (got["n_vocab"], got["n_layer"]) == (p.n_vocab, p.n_layer)


def test_family_specific_tensors_and_keys():
    phi = preset_tensor_shapes(SHRUNK["phi3"])
    assert phi["blk.0.attn_qkv.weight"] == (128, 3 * 128) and phi["blk.0.ffn_up.weight"] == (128, 2 * 128)
    assert "blk.0.attn_q.weight" not in phi and "blk.0.ffn_gate.weight" not in phi
    qwen = preset_tensor_shapes(SHRUNK["qwen2"])
    assert qwen["blk.1.attn_k.bias"] == (64,) and "output.weight" not in qwen  # biases; tied
    st = preset_tensor_shapes(SHRUNK["stablelm"])
    assert "blk.0.attn_norm.bias" in st and "output_norm.bias" in st and "output.weight" in st
    gem = preset_tensor_shapes(SHRUNK["gemma2"])
    assert gem["blk.0.attn_q.weight"] == (160, 128) and "blk.0.post_ffw_norm.weight" in gem


def test_invalid_structures_are_refused():
    with pytest.raises(ValueError, match="n_head\\*head_dim"):
        preset_tensor_shapes(dataclasses.replace(SHRUNK["qwen2"], head_dim=64))
    with pytest.raises(ValueError, match="gemma2 always ties"):
        preset_tensor_shapes(dataclasses.replace(SHRUNK["gemma2"], tied=False))
    with pytest.raises(InputError, match="not supported"):
        preset_tensor_shapes(dataclasses.replace(TINY, arch="mamba"))


def test_writer_is_seeded_and_reports_progress(tmp_path):
    calls = []
    a = synth_gguf.write_gguf(TINY, tmp_path / "a.gguf", progress=lambda d, t: calls.append((d, t)))
    b = synth_gguf.write_gguf(TINY, tmp_path / "b.gguf")
    c = synth_gguf.write_gguf(TINY, tmp_path / "c.gguf", seed=1)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] == read_gguf_info(a).tensor_bytes
    assert sorted(os.listdir(tmp_path)) == ["a.gguf", "b.gguf", "c.gguf"]  # no temp files left


# -- quantizing ---------------------------------------------------------------------------------
def test_tiny_levels_load_and_decode(tiny_gguf, model_cache, llama):
    for q in ("F16", "Q8_0", "Q4_K_M", "Q2_K", "IQ4_NL"):
        path = synth_gguf.ensure_model("tiny", q, cache=model_cache)
        assert read_gguf_info(path).quant == q
        got = llama.load_and_decode(path)
        assert got["rc"] == (0, 0) and got["finite"], q


def test_quantize_reports_progress_and_fails_cleanly(tiny_gguf, tmp_path):
    calls = []
    out = synth_gguf.quantize(tiny_gguf["F16"], tmp_path / "q.gguf", "q5_k_m", progress=lambda d, t: calls.append((d, t)))
    assert read_gguf_info(out).quant == "Q5_K_M"
    assert len(calls) > 2 and calls[-1][0] == calls[-1][1]
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_text("hello")
    with pytest.raises(InputError, match="not a GGUF file"):
        synth_gguf.quantize(not_gguf, tmp_path / "y.gguf", "Q8_0")
    assert sorted(os.listdir(tmp_path)) == ["q.gguf", "x.gguf"]


def test_check_quant():
    assert GGUF_QUANTS.check("q4_k_m") == "Q4_K_M"
    assert GGUF_QUANTS.check(" f16 ") == "F16"
    assert set(GGUF_QUANTS.ladder) <= set(GGUF_QUANTS.levels)
    for bad in ("Q4_K_X", "Q2_K_S", "IQ2_XXS"):  # the last two need an importance matrix
        with pytest.raises(InputError) as e:
            GGUF_QUANTS.check(bad)
        msg = str(e.value)
        assert f"unknown quant level {bad!r}" in msg and "Q4_K_M" in msg and "IQ4_NL" in msg and "\n" not in msg


# -- the cache ----------------------------------------------------------------------------------
def test_models_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEBENCH_HOME", str(tmp_path / "home"))
    assert models_dir() == tmp_path / "home" / "models"
    assert models_dir(tmp_path / "c") == tmp_path / "c" / "models"
    monkeypatch.delenv("EDGEBENCH_HOME")
    assert models_dir() == Path.home() / ".cache" / "edgebench" / "models"


def test_ensure_model_reuses_and_leaves_no_temp_files(tmp_path):
    p = synth_gguf.ensure_model("TINY", "q8_0", cache=tmp_path)
    assert p == models_dir(tmp_path) / "tiny-Q8_0.gguf"
    mtime = p.stat().st_mtime_ns
    assert synth_gguf.ensure_model("tiny", "Q8_0", cache=tmp_path).stat().st_mtime_ns == mtime
    names = os.listdir(models_dir(tmp_path))
    assert sorted(n for n in names if n.endswith(".gguf")) == ["tiny-F16.gguf", "tiny-Q8_0.gguf"]
    assert not [n for n in names if ".tmp-" in n]


def test_stale_corrupt_and_leftover_files_are_rebuilt(tmp_path, monkeypatch):
    d = models_dir(tmp_path)
    f16 = synth_gguf.ensure_model("tiny", "F16", cache=tmp_path)
    size = f16.stat().st_size
    f16.write_bytes(f16.read_bytes()[: size // 3])  # a truncated cache file is never reused
    (d / ".tiny-F16.gguf.tmp-999999").write_bytes(b"left by a killed builder")
    assert synth_gguf.ensure_model("tiny", "F16", cache=tmp_path).stat().st_size == size
    assert not list(d.glob(".*tmp-*"))
    monkeypatch.setattr(synth_gguf, "SYNTH_VERSION", synth_gguf.SYNTH_VERSION + 1)  # a newer writer
    q = synth_gguf.ensure_model("tiny", "Q4_0", cache=tmp_path)
    assert read_metadata(q)[synth_gguf.KEY_VERSION] == synth_gguf.SYNTH_VERSION
    assert read_metadata(f16)[synth_gguf.KEY_VERSION] == synth_gguf.SYNTH_VERSION


def _build(cache: str) -> str:
    path = synth_gguf.ensure_model("tiny", "Q4_K_M", cache=Path(cache))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_concurrent_builders_share_one_file(tmp_path):
    # spawn, not fork: the parent may already hold llama.cpp threads
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        digests = pool.map(_build, [str(tmp_path)] * 2)
    path = models_dir(tmp_path) / "tiny-Q4_K_M.gguf"
    assert digests[0] == digests[1] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_gguf_info(path).quant == "Q4_K_M"
    assert not [n for n in os.listdir(path.parent) if ".tmp-" in n]
