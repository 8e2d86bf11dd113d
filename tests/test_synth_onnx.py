"""Synthetic ONNX decoders: layout, quantization, seeding and the build cache."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from edgebench.errors import InputError
from edgebench.models import synth_onnx
from edgebench.models.onnx_file import count_weights
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


def _one_step(path, keep: int | None = None, providers=("CPUExecutionProvider",)) -> np.ndarray:
    """Logits of a 3-token prompt on an empty cache, with plain session.run (``keep``: fed as
    num_logits_to_keep; None leaves the graph's default, every position)."""
    sess = ort.InferenceSession(str(path), providers=list(providers))
    kv_dtype = np.float16 if _meta(path)["edgebench.quant"].endswith("fp16") else np.float32
    feed = {"input_ids": np.array([[1, 2, 3]], np.int64), "attention_mask": np.ones((1, 3), np.int64),
            "position_ids": np.arange(3, dtype=np.int64)[None]}
    for i in range(SMALL.n_layer):
        for kv in ("key", "value"):
            feed[f"past_key_values.{i}.{kv}"] = np.zeros((1, SMALL.n_head_kv, 0, SMALL.head_dim), kv_dtype)
    if keep is not None:
        feed["num_logits_to_keep"] = np.array([keep], np.int64)
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
    assert inputs[3:] == [f"past_key_values.{i}.{kv}" for i in range(2) for kv in ("key", "value")] + [
        "num_logits_to_keep"]  # optional: its initializer defaults it to 0 (every position's logits)
    assert outputs == ["logits"] + [f"present.{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    meta = _meta(path)
    assert meta["edgebench.preset"] == "test-synth" and meta["edgebench.quant"] == "fp32"
    assert {"GroupQueryAttention", "RotaryEmbedding", "MatMul"} <= _ops(path)
    names = {t.name for t in model.graph.initializer}
    assert "model.layers.0.self_attn.q_proj.bias" in names  # qkv_bias preset
    logits = _one_step(path)
    assert logits.shape == (1, 3, SMALL.n_vocab) and np.isfinite(logits).all()
    last = _one_step(path, keep=1)  # lm_head on the last position only, as llama.cpp computes it
    assert last.shape == (1, 1, SMALL.n_vocab)
    np.testing.assert_allclose(last[0, 0], logits[0, -1], rtol=1e-5, atol=1e-6)


def _untied_copy(path, out):
    """``path`` with the tied embedding stored as its own [n_vocab, n_embd] table and a plain Gather:
    the layout before models.onnx_tied, the reference for what the shared lookup must compute."""
    model = onnx.load_model(str(path))
    g = model.graph
    w = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    g.initializer.append(onnx.numpy_helper.from_array(np.ascontiguousarray(w["lm_head.weight"].T),
                                                      "model.embed_tokens.weight"))
    tied = [n for n in g.node if n.name.startswith("/model/embed_tokens/tied/")]
    assert [n.op_type for n in tied] == ["Gather", "Transpose"]
    at = list(g.node).index(tied[0])
    for n in tied:
        g.node.remove(n)
    g.node.insert(at, onnx.helper.make_node("Gather", ["model.embed_tokens.weight", "input_ids"], [tied[-1].output[0]],
                                            name="/model/embed_tokens/Gather", axis=0))
    onnx.save_model(model, str(out))
    return out


def test_tied_embedding_is_stored_once(tmp_path):
    path = write_onnx(SMALL, tmp_path / "m.onnx")
    model = onnx.load_model(str(path))
    onnx.checker.check_model(model)
    names = {t.name for t in model.graph.initializer}
    assert "lm_head.weight" in names and "model.embed_tokens.weight" not in names
    assert _meta(path)["edgebench.tied_shared"] == "1"
    untied = _untied_copy(path, tmp_path / "untied.onnx")
    n_params, n_bytes, _ = count_weights(model.graph)
    n_untied, bytes_untied, _ = count_weights(onnx.load_model(str(untied)).graph)
    matrix = SMALL.n_vocab * SMALL.n_embd  # counted and stored once
    assert (n_params, n_bytes) == (n_untied - matrix, bytes_untied - 4 * matrix)
    # the lookup into lm_head.weight gives exactly the logits of a separate embedding table
    np.testing.assert_array_equal(_one_step(path), _one_step(untied))


@pytest.mark.parametrize("quant,embed_op", [("int8", "GatherBlockQuantized"), ("int4-b32", "GatherBlockQuantized")])
def test_quantized_tied_embedding_reads_the_quantized_lm_head(tmp_path, quant, embed_op):
    """One stored copy at every level: the embedding is the lm_head's own quantized weight, so a
    tied model's bits per weight count the matrix once, as llama.cpp's token_embd is."""
    path = ensure_onnx_model(SMALL, quant, cache=tmp_path)
    model = onnx.load_model(str(path))
    onnx.checker.check_model(model)
    assert embed_op in {n.op_type for n in model.graph.node if n.name.startswith("/model/embed_tokens/tied/")}
    names = {t.name for t in model.graph.initializer}
    assert not {"model.embed_tokens.weight", "lm_head.weight"} & names
    fp32 = ensure_onnx_model(SMALL, "fp32", cache=tmp_path)
    assert count_weights(model.graph)[0] == count_weights(onnx.load_model(str(fp32)).graph)[0]
    ref, got = _one_step(fp32), _one_step(path)
    assert np.isfinite(got).all() and np.abs(got - ref).max() < 0.5 * np.abs(ref).max()


def test_weights_are_seeded(tmp_path):
    a = write_onnx(SMALL, tmp_path / "a.onnx", seed=3).read_bytes()
    b = write_onnx(SMALL, tmp_path / "b.onnx", seed=3).read_bytes()
    c = write_onnx(SMALL, tmp_path / "c.onnx", seed=4).read_bytes()
    assert a == b and a != c


@pytest.mark.parametrize("quant,op", [("int8", "MatMulNBits"), ("int4-b32", "MatMulNBits"),
                                      ("int4-b128", "MatMulNBits")])
def test_quantized_levels(tmp_path, quant, op):
    path = ensure_onnx_model(SMALL, quant, cache=tmp_path)
    assert path.name == f"test-synth-{quant}.onnx"
    ops = _ops(path)
    assert op in ops and "MatMul" not in ops  # every weight matmul quantized, lm_head included
    assert _meta(path)["edgebench.quant"] == quant
    graph = onnx.load_model(str(path)).graph
    # (bits, block_size) per MatMulNBits (models.onnx_quant): the lm_head 8-bit in blocks of 32 at every level
    got = {n.name.split("_Q")[0]: tuple(a.i for a in n.attribute if a.name in ("bits", "block_size"))
           for n in graph.node if n.op_type == op}
    assert got.pop("/lm_head/MatMul") == (8, 32)
    assert set(got.values()) == ({(8, 32)} if quant == "int8" else {(4, int(quant.split("-b")[1]))})
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
    assert ONNX_QUANT_LEVELS == ("fp32", "int8", "int4-b32", "int4-b128", "fp16", "int4-b32-fp16")


@pytest.mark.parametrize("quant,matmul,tol", [("fp16", "MatMul", 0.01), ("int4-b32-fp16", "MatMulNBits", 0.5)])
def test_fp16_levels_are_valid_graphs_that_run_on_cpu(tmp_path, quant, matmul, tol):
    """The CUDA levels, checked without a GPU: onnx.checker, then onnxruntime's CPU provider (it has
    float16 kernels for every op in them); float16 weights, cache and logits, rotary cache float32."""
    path = ensure_onnx_model(SMALL, quant, cache=tmp_path)
    model = onnx.load_model(str(path))
    onnx.checker.check_model(model, full_check=True)
    g = model.graph
    io = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.output]}
    assert io["past_key_values.0.key"] == io["present.1.value"] == io["logits"] == TensorProto.FLOAT16
    scales = next(n.input[2] for n in g.node if n.op_type == "MatMulNBits") if matmul == "MatMulNBits" else None
    types = {t.name: t.data_type for t in g.initializer}
    assert types[scales or "lm_head.weight"] == TensorProto.FLOAT16
    assert any(n.op_type == "Cast" and n.name == "/model/rotary/Cos_fp16" for n in g.node)
    ref, got = _one_step(ensure_onnx_model(SMALL, "fp32", cache=tmp_path)), _one_step(path)
    assert got.dtype == np.float16 and np.abs(got.astype(np.float32) - ref).max() < tol * np.abs(ref).max()


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(),
                    reason="no CUDA execution provider in this onnxruntime / no GPU: the fp16 levels run on CUDA "
                           "only where one is present")
@pytest.mark.parametrize("quant", ["fp16", "int4-b32-fp16"])
def test_fp16_levels_on_cuda(tmp_path, quant):
    path = ensure_onnx_model(SMALL, quant, cache=tmp_path)
    ref = _one_step(path)
    got = _one_step(path, providers=("CUDAExecutionProvider",))
    np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32), atol=0.02 * np.abs(ref).max())
