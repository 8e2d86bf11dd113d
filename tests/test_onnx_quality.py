"""The quality pass on the ONNX Runtime backend (capability "logits"): synthetic decoders, a stream the
fp32 reference generates itself (ONNX presets have no tokenizer)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edgebench.backends.onnxruntime import OnnxRuntimeBackend
from edgebench.cli import main
from edgebench.models.presets import PRESETS
from edgebench.models.synth_onnx import ensure_onnx_model
from edgebench.records import Case

SMALL = dataclasses.replace(PRESETS["smollm-135m"], name="test-ort-quality", n_layer=2, n_embd=128, n_head=4,
                            n_head_kv=2, head_dim=32, n_ff=256, n_vocab=512)
TOKENS = [int(t) for t in np.random.default_rng(3).integers(0, SMALL.n_vocab, 40)]


@pytest.fixture(scope="session")
def small_fp32(tmp_path_factory) -> Path:
    return ensure_onnx_model(SMALL, "fp32", cache=tmp_path_factory.mktemp("ort-quality-models"))


@pytest.fixture
def backend():
    b = OnnxRuntimeBackend()
    yield b
    b.close()


def _case(model, **kw) -> Case:
    kw.setdefault("n_threads", 2)
    return Case(backend="onnxruntime", model=str(model), **kw)


def test_class_facts():
    assert "logits" in OnnxRuntimeBackend.capabilities
    assert OnnxRuntimeBackend.reference_quant == "fp32"
    assert OnnxRuntimeBackend.check_quant("fp32") == "fp32"


def test_logits_match_the_cache_path_and_leave_the_backend_usable(small_fp32, backend):
    # n_prompt 4 + n_gen 2: a shared-buffer cache of 256 slots; 40 tokens in chunks of 16
    info = backend.load(_case(small_fp32, n_prompt=4, n_gen=2, n_batch=16, n_ubatch=16))
    assert backend.n_vocab == info.n_vocab == SMALL.n_vocab and backend.bos_token() is None
    full = backend.logits(TOKENS)
    assert full.shape == (len(TOKENS), SMALL.n_vocab) and full.dtype == np.float32 and np.isfinite(full).all()
    assert backend.kv_used_bytes() > 0
    backend.reset()
    steps = np.stack([backend.step_logits(t) for t in TOKENS])
    np.testing.assert_allclose(steps, full, rtol=1e-4, atol=1e-4)
    again = backend.logits(TOKENS[:8])  # a fresh sequence: the cache is cleared first
    np.testing.assert_allclose(again, full[:8], rtol=1e-4, atol=1e-4)
    backend.reset()
    backend.prefill(TOKENS[:8])
    backend.decode_step(TOKENS[8])
    np.testing.assert_allclose(backend.last_logits(), full[8], rtol=1e-4, atol=1e-4)


def test_fit_context_grows_the_shared_cache(small_fp32, backend):
    backend.load(_case(small_fp32, n_ctx=16, n_prompt=4, n_gen=2, n_batch=8, n_ubatch=8))
    assert backend._kv_shared
    with pytest.raises(RuntimeError, match="holds 16 tokens"):
        backend.prefill(TOKENS[:20])
    backend.fit_context(40)
    long = backend.logits(TOKENS)
    backend.reset()
    backend.prefill(TOKENS[:39])
    backend.decode_step(TOKENS[39])
    np.testing.assert_allclose(backend.last_logits(), long[-1], rtol=1e-4, atol=1e-4)


def test_tokenize_says_there_is_no_tokenizer(small_fp32, backend):
    backend.load(_case(small_fp32, n_prompt=4, n_gen=2))
    with pytest.raises(NotImplementedError, match="no tokenizer: score a generated stream"):
        backend.tokenize("hello")


QUICK = ("--backend", "onnxruntime", "-p", "8", "-n", "2", "-r", "1", "--no-report", "--no-verify", "-t", "2",
         "--quality", "--quality-ctx", "32", "--quality-chunks", "2")


def _run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_int8_scored_against_the_fp32_reference_through_the_cli(tmp_path, capsys):
    from edgebench.analysis.summary import summarize_run
    from edgebench.store.database import Store

    out = tmp_path / "out"
    code, _, err = _run(capsys, "run", "-m", "tiny", "-q", "fp32,int8", "-o", out, *QUICK)
    assert code == 0, err
    store = Store(out, create=False)
    run = store.get_run("latest")
    samples = store.get_samples(run.run_id)
    q = samples[samples["phase"] == "quality"]
    assert set(q["metric"]) == {"kld", "delta_p", "same_top", "nll", "nll_ref"}
    rows = {r["quant"]: r for r in summarize_run(store, run.run_id)}
    assert rows["fp32"]["kld_mean"] < 1e-9 and rows["fp32"]["same_top_p"] == pytest.approx(1.0)
    assert rows["int8"]["kld_mean"] > 0 and rows["int8"]["same_top_p"] > 0.5
    for case in store.get_cases(run.run_id):
        assert case["status"] == "ok", case


def test_a_text_fails_the_case_with_one_clear_reason(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("the river and the mill " * 40)
    code, _, err = _run(capsys, "run", "-m", "tiny", "-q", "fp32", "--text", text, "-o", tmp_path / "out", *QUICK)
    assert code == 1
    assert "this ONNX model has no tokenizer: score a generated stream (no --text)" in " ".join(err.split())


def test_a_gguf_reference_scores_onnx_levels_on_the_same_tokens(tmp_path, capsys, tiny_gguf):
    """One reference for two runtimes: the GGUF runs on llama.cpp (the sweep's backend cannot read it),
    generates the stream, and the ONNX levels are scored against it on those very tokens."""
    from edgebench.store.database import Store

    ref = tiny_gguf["F16"]
    code, _, err = _run(capsys, "quality", "tiny", "--backend", "onnxruntime", "-q", "fp32,int8", "--quality-ref", ref,
                        "--quality-ctx", "32", "--quality-chunks", "2", "-o", tmp_path / "out")
    assert code == 0, err
    store = Store(tmp_path / "out", create=False)
    cases = store.get_cases(store.get_run("latest").run_id)
    assert [(c["backend"], c["status"]) for c in cases] == [("llama-cpp", "ok"), ("onnxruntime", "ok"), ("onnxruntime", "ok")]
    infos = [c["info"]["quality"] for c in cases]
    assert infos[0]["is_reference"] and not infos[1]["is_reference"]
    assert len({i["tokens_sha256"] for i in infos}) == 1 and len({i["ref_sha256"] for i in infos}) == 1
    assert all(i["scored_tokens"] == 30 for i in infos)
    # each worker's own peak, not the parent's carried over exec (they differ by runtime)
    assert all(0 < i["peak_rss_bytes"] < 2**31 for i in infos) and len({i["peak_rss_bytes"] for i in infos}) > 1


def test_a_reference_no_backend_can_score_is_refused(tmp_path, capsys):
    ref = tmp_path / "model.txt"
    ref.write_text("not a model")
    code, _, err = _run(capsys, "quality", "tiny", "--backend", "onnxruntime", "-q", "fp32", "--quality-ref", ref,
                        "-o", tmp_path / "out")
    assert code == 2 and "no backend computes logits" in err and err.count("\n") == 1
