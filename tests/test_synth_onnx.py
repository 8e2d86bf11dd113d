"""Synthetic ONNX decoders: layout, quantization, seeding and the build cache."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgebench.errors import InputError
from edgebench.models import synth_onnx
from edgebench.models.presets import PRESETS
from edgebench.models.quant_levels import ONNX_QUANTS
from edgebench.models.synth_onnx import ensure_onnx_model, write_onnx

ONNX_QUANT_LEVELS, check_onnx_quant = ONNX_QUANTS.levels, ONNX_QUANTS.check

SMALL = dataclasses.replace(PRESETS["qwen2.5-0.5b"], name="test-synth", n_layer=2, n_embd=128, n_head=4,
                            n_head_kv=2, head_dim=32, n_ff=256, n_vocab=384)


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load_model(str(path), load_external_data=False).graph.node}


def _meta(path) -> dict[str, str]:
    return {e.key: e.value for e in onnx.load_model(str(path), load_external_data=False).metadata_props}


def _one_step(path) -> np.ndarray:
    """Logits of a 3-token prompt on an empty cache, with plain session.run."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"input_ids": np.array([[1, 2, 3]], np.int64), "attention_mask": np.ones((1, 3), np.int64),
            "position_ids": np.arange(3, dtype=np.int64)[None]}
    for i in range(SMALL.n_layer):
        for kv in ("key", "value"):
            feed[f"past_key_values.{i}.{kv}"] = np.zeros((1, SMALL.n_head_kv, 0, SMALL.head_dim), np.float32)
    return sess.run(["logits"], feed)[0]


def test_check_onnx_quant():
    assert check_onnx_quant("INT4-B32") == "int4-b32"
    assert check_onnx_quant("fp32") == "fp32"
    with pytest.raises(InputError, match="valid: fp32, int8, int4-b32, int4-b128"):
        check_onnx_quant("Q4_K_M")


def test_fp32_layout_and_metadata(tmp_path):
    path = write_onnx(SMALL, tmp_path / "m.onnx")
    model = onnx.load_model(str(path))
    onnx.checker.check_model(model)
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    assert inputs[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert inputs[3:] == [f"past_key_values.{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    assert outputs == ["logits"] + [f"present.{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    meta = _meta(path)
    assert meta["edgebench.preset"] == "test-synth" and meta["edgebench.quant"] == "fp32"
    assert {"GroupQueryAttention", "RotaryEmbedding", "MatMul"} <= _ops(path)
    names = {t.name for t in model.graph.initializer}
    assert "model.layers.0.self_attn.q_proj.bias" in names  # qkv_bias preset
    logits = _one_step(path)
    assert logits.shape == (1, 3, SMALL.n_vocab) and np.isfinite(logits).all()


def test_tied_output_is_the_embedding_transposed(tmp_path):
    model = onnx.load_model(str(write_onnx(SMALL, tmp_path / "m.onnx")))
    w = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_array_equal(w["lm_head.weight"], w["model.embed_tokens.weight"].T)


def test_weights_are_seeded(tmp_path):
    a = write_onnx(SMALL, tmp_path / "a.onnx", seed=3).read_bytes()
    b = write_onnx(SMALL, tmp_path / "b.onnx", seed=3).read_bytes()
    c = write_onnx(SMALL, tmp_path / "c.onnx", seed=4).read_bytes()
    assert a == b and a != c


@pytest.mark.parametrize("quant,op", [("int8", "MatMulInteger"), ("int4-b32", "MatMulNBits"),
                                      ("int4-b128", "MatMulNBits")])
def test_quantized_levels(tmp_path, quant, op):
    path = ensure_onnx_model(SMALL, quant, cache=tmp_path)
    assert path.name == f"test-synth-{quant}.onnx"
    ops = _ops(path)
    assert op in ops and "MatMul" not in ops  # every weight matmul quantized, lm_head included
    assert _meta(path)["edgebench.quant"] == quant
    if op == "MatMulNBits":
        graph = onnx.load_model(str(path)).graph
        blocks = {a.i for n in graph.node if n.op_type == op for a in n.attribute if a.name == "block_size"}
        assert blocks == {int(quant.split("-b")[1])}
    assert np.isfinite(_one_step(path)).all()


def test_ensure_reuses_the_cache_and_leaves_no_temp_files(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEBENCH_HOME", str(tmp_path))
    built = []
    first = ensure_onnx_model("tiny", "int4-b32", progress=lambda done, total: built.append((done, total)))
    assert built[-1][0] == built[-1][1] > 0 and len(built) > 3  # fp32 tensors, then the quantizer
    assert first == tmp_path / "models" / "tiny-int4-b32.onnx"
    stamp = first.stat().st_mtime_ns
    messages = []
    assert ensure_onnx_model("TINY", "INT4-B32", progress=lambda *a: messages.append(a)) == first
    assert first.stat().st_mtime_ns == stamp and messages == []
    names = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert names == ["tiny-fp32.onnx", "tiny-fp32.onnx.lock", "tiny-int4-b32.onnx", "tiny-int4-b32.onnx.lock"]


def test_concurrent_builders_share_one_build(tmp_path, monkeypatch):
    calls = []
    real = synth_onnx.write_onnx

    def counting(preset, path, seed=0, progress=None):
        calls.append(path)
        return real(preset, path, seed, progress)

    monkeypatch.setattr(synth_onnx, "write_onnx", counting)
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(ensure_onnx_model(SMALL, "fp32", cache=tmp_path)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(results)) == 1 and len(results) == 3
    assert not [p for p in (tmp_path / "models").iterdir() if ".tmp-" in p.name]


def test_stale_temp_folder_is_cleared(tmp_path):
    models = tmp_path / "models"
    stale = models / ".test-synth-fp32.onnx.tmp-dead"
    stale.mkdir(parents=True)
    (stale / "test-synth-fp32.onnx").write_bytes(b"half")
    ensure_onnx_model(SMALL, "fp32", cache=tmp_path)
    assert not stale.exists()


def test_large_models_use_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(synth_onnx, "EXTERNAL_DATA_ABOVE", 100_000)
    fp32 = ensure_onnx_model(SMALL, "fp32", cache=tmp_path)
    for path in (fp32, ensure_onnx_model(SMALL, "int8", cache=tmp_path),
                 ensure_onnx_model(SMALL, "int4-b128", cache=tmp_path)):
        data = path.with_name(path.name + ".data")
        assert data.stat().st_size > path.stat().st_size
        assert np.isfinite(_one_step(path)).all()
    np.testing.assert_allclose(_one_step(fp32), _one_step(write_onnx(SMALL, tmp_path / "inline.onnx")))


def test_unknown_preset_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="unknown preset"):
        ensure_onnx_model("gpt-9", "fp32", cache=tmp_path)
    assert ONNX_QUANT_LEVELS == ("fp32", "int8", "int4-b32", "int4-b128")
