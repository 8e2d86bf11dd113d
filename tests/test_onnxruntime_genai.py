"""The onnxruntime-genai backend on tiny synthetic model folders (real onnxruntime-genai, nothing
mocked), checked against the plain onnxruntime backend running the same graph."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is not installed (the optional extra: "
                                                "pip install 'edgebench[genai]')")

from edgebench.backends import backend_class, canonical_name  # noqa: E402
from edgebench.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from edgebench.backends.onnxruntime_genai import OnnxRuntimeGenaiBackend  # noqa: E402
from edgebench.errors import InputError  # noqa: E402
from edgebench.models.presets import PRESETS  # noqa: E402
from edgebench.models.synth_genai import GENAI_CONFIG, write_genai_folder  # noqa: E402
from edgebench.records import Case  # noqa: E402
from edgebench.run.runner import run_worker  # noqa: E402

SMALL = dataclasses.replace(PRESETS["smollm-135m"], name="test-genai", n_layer=2, n_embd=128, n_head=4,
                            n_head_kv=2, head_dim=32, n_ff=256, n_vocab=512)
PER_TOKEN_KV = 2 * SMALL.n_layer * SMALL.n_head_kv * SMALL.head_dim * 4
TOKENS = [int(t) for t in np.random.default_rng(11).integers(0, SMALL.n_vocab, 24)]
QUANTS = ("fp32", "int4-b32")


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict[str, Path]:
    cache = tmp_path_factory.mktemp("genai-models")
    return {q: write_genai_folder(SMALL, q, cache=cache) for q in QUANTS}


def _case(model, backend="onnxruntime-genai", **kw) -> Case:
    kw.setdefault("n_prompt", 10)
    kw.setdefault("n_gen", 4)
    kw.setdefault("n_threads", 2)
    return Case(backend=backend, model=str(model), **kw)


@pytest.fixture
def genai():
    b = OnnxRuntimeGenaiBackend()
    yield b
    b.close()


def _plain_logits(model_file: Path, prompt: list[int], steps: list[int]) -> np.ndarray:
    b = OnnxRuntimeBackend()
    try:
        b.load(_case(model_file, backend="onnxruntime"))
        b.prefill(prompt)
        for t in steps:
            b.decode_step(t)
        return b.last_logits()
    finally:
        b.close()


def test_registry_names_it():
    assert canonical_name("genai") == canonical_name("onnxruntime-genai") == "onnxruntime-genai"
    assert backend_class("genai") is OnnxRuntimeGenaiBackend


def test_folder_layout(folders):
    for folder in folders.values():
        cfg = json.loads((folder / GENAI_CONFIG).read_text())
        dec = cfg["model"]["decoder"]
        assert (folder / dec["filename"]).is_file()
        assert (dec["num_hidden_layers"], dec["num_key_value_heads"], dec["head_size"]) == (2, 2, 32)
        assert cfg["search"]["past_present_share_buffer"] is True
    assert write_genai_folder(SMALL, "fp32", cache=folders["fp32"].parent.parent) == folders["fp32"]  # cached


@pytest.mark.parametrize("quant", QUANTS)
def test_load_prefill_decode(folders, genai, quant):
    case = _case(folders[quant])
    info = genai.load(case)
    plain = OnnxRuntimeBackend()
    try:  # the same facts as the plain backend reads from the same file
        ref = plain.load(_case(folders[quant] / "model.onnx", backend="onnxruntime"))
    finally:
        plain.close()
    same = ("model_name", "quant", "n_params", "model_bytes", "bpw", "n_layer", "n_embd", "n_head", "n_head_kv",
            "head_dim", "n_vocab", "n_ctx_train", "n_ctx_runtime")
    assert {k: getattr(info, k) for k in same} == {k: getattr(ref, k) for k in same}
    assert (info.quant, info.n_ctx_runtime, info.extra["kv_cache"]) == (quant, 256, "shared-buffer")
    genai.prefill(TOKENS[:10])
    assert genai.kv_used_bytes() == PER_TOKEN_KV * 10
    for t in TOKENS[10:13]:
        genai.decode_step(t)
    assert genai.kv_used_bytes() == PER_TOKEN_KV * 13
    assert np.isfinite(genai.last_logits()).all()
    mem = genai.memory()
    assert mem.weights_by_buffer == {"CPU": info.model_bytes}
    assert mem.kv_bytes == PER_TOKEN_KV * 256 and mem.compute_by_buffer == {}
    assert genai.versions()["onnxruntime-genai"]


@pytest.mark.parametrize("quant", QUANTS)
def test_logits_match_plain_onnxruntime(folders, genai, quant):
    # Same graph, same cache path: prefill P tokens then one decode step gives the same logits.
    genai.load(_case(folders[quant], n_batch=4, n_ubatch=4))  # prefill in chunks of 4, 4, 1
    genai.prefill(TOKENS[:9])
    genai.decode_step(TOKENS[9])
    got = genai.last_logits()
    want = _plain_logits(folders[quant] / "model.onnx", TOKENS[:9], [TOKENS[9]])
    assert got.shape == (SMALL.n_vocab,)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_reset_empties_the_cache(folders, genai):
    genai.load(_case(folders["int4-b32"]))
    genai.prefill(TOKENS[:20])
    genai.reset()
    assert genai.kv_used_bytes() == 0
    genai.prefill(TOKENS[:5])  # stale entries of the longer sequence must not leak in
    genai.decode_step(TOKENS[5])
    after = genai.last_logits()
    np.testing.assert_allclose(after, _plain_logits(folders["int4-b32"] / "model.onnx", TOKENS[:5], [TOKENS[5]]),
                               rtol=1e-4, atol=1e-4)
    genai.reset()
    genai.prefill(TOKENS[:5])
    genai.decode_step(TOKENS[5])
    np.testing.assert_array_equal(after, genai.last_logits())


def test_bad_inputs(folders, genai, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(folders["fp32"] / "model.onnx", bare / "model.onnx")
    for model in (bare, folders["fp32"] / "model.onnx", tmp_path / "missing"):
        with pytest.raises(InputError, match="onnxruntime-genai model|does not exist") as e:
            genai.load(_case(model))
        assert "\n" not in str(e.value)

    def edited(name: str, edit) -> Path:
        d = tmp_path / name
        shutil.copytree(folders["fp32"], d)
        cfg = json.loads((d / GENAI_CONFIG).read_text())
        edit(cfg)
        (d / GENAI_CONFIG).write_text(json.dumps(cfg))
        return d

    with pytest.raises(InputError, match="lacks"):
        genai.load(_case(edited("nofile", lambda c: c["model"]["decoder"].update(filename="gone.onnx"))))
    with pytest.raises(InputError, match="num_key_value_heads"):
        genai.load(_case(edited("heads", lambda c: c["model"]["decoder"].update(num_key_value_heads=4))))
    with pytest.raises(InputError, match="context_length"):
        genai.load(_case(folders["fp32"], n_ctx=4096))
    with pytest.raises(InputError, match="tensorrt"):
        genai.load(_case(folders["fp32"], ep="tensorrt"))


def test_worker_end_to_end(folders, tmp_path):
    case = Case(backend="onnxruntime-genai", model=str(folders["int4-b32"]), n_prompt=16, n_gen=4, reps=2, n_threads=2)
    res = run_worker(case, tmp_path / "log")
    assert res.status == "ok", res.error
    m = [s.metric for s in res.samples]
    assert m.count("prefill_ns") == 2 and m.count("decode_step_ns") == 8
    assert "kv_bytes" in m and "weights_bytes" in m and "rss_peak_bytes" in m
    assert res.info["model"]["quant"] == "int4-b32"
    assert res.info["versions"]["onnxruntime-genai"]
    used = {s.phase: s.value for s in res.samples if s.metric == "kv_used_bytes" and s.rep == 1}
    assert used == {"prefill": PER_TOKEN_KV * 16, "decode": PER_TOKEN_KV * 20}
