"""The ONNX Runtime backend on tiny synthetic decoders (real onnxruntime, nothing mocked)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgebench.backends.onnxruntime import OnnxRuntimeBackend
from edgebench.errors import InputError
from edgebench.models.presets import PRESETS
from edgebench.models.quant_levels import ONNX_FP16_LEVELS, ONNX_QUANTS
from edgebench.models.synth_onnx import ensure_onnx_model
from edgebench.records import OP_CLASSES, Case

SMALL = dataclasses.replace(PRESETS["smollm-135m"], name="test-ort", n_layer=2, n_embd=128, n_head=4,
                            n_head_kv=2, head_dim=32, n_ff=256, n_vocab=512)
# Parameters as the file holds them: the tied [n_vocab, n_embd] matrix once (models.onnx_tied), as in a GGUF.
SMALL_PARAMS = 512 * 128 + 128 + 2 * (2 * 128 + 128 * 128 * 2 + 128 * 64 * 2 + 3 * 128 * 256)
PER_TOKEN_KV = 2 * SMALL.n_layer * SMALL.n_head_kv * SMALL.head_dim * 4
TOKENS = [int(t) for t in np.random.default_rng(7).integers(0, SMALL.n_vocab, 24)]


@pytest.fixture(scope="session")
def small_onnx(tmp_path_factory) -> dict[str, Path]:
    cache = tmp_path_factory.mktemp("ort-models")
    return {q: ensure_onnx_model(SMALL, q, cache=cache) for q in ONNX_QUANTS.levels}


def _case(model, **kw) -> Case:
    kw.setdefault("n_prompt", 10)
    kw.setdefault("n_gen", 4)
    kw.setdefault("n_threads", 2)
    return Case(backend="onnxruntime", model=str(model), **kw)


@pytest.fixture
def backend():
    b = OnnxRuntimeBackend()
    yield b
    b.close()


@pytest.mark.parametrize("quant", ONNX_QUANTS.levels)
def test_load_prefill_decode(small_onnx, backend, quant):
    case = _case(small_onnx[quant])
    info = backend.load(case)
    assert (info.quant, info.n_layer, info.n_head_kv, info.head_dim) == (quant, 2, 2, 32)
    assert (info.n_embd, info.n_head, info.n_vocab, info.model_name) == (128, 4, 512, "test-ort")
    assert info.n_params == SMALL_PARAMS
    assert info.n_ctx_runtime == case.ctx_effective == 256
    assert info.bpw == pytest.approx(info.model_bytes * 8 / info.n_params)
    assert (info.bpw == 32.0) == (quant == "fp32")
    per_token = PER_TOKEN_KV // 2 if quant in ONNX_FP16_LEVELS else PER_TOKEN_KV  # a float16 cache
    assert info.extra["kv_dtype"] == ("float16" if quant in ONNX_FP16_LEVELS else "float32")
    backend.prefill(TOKENS[:10])
    assert backend.kv_used_bytes() == per_token * 10
    for g in range(3):
        backend.decode_step(TOKENS[10 + g])
    assert backend.kv_used_bytes() == per_token * (10 + 3)
    assert np.isfinite(backend.last_logits()).all()
    mem = backend.memory()
    assert mem.weights_by_buffer == {"CPU": info.model_bytes}
    assert mem.kv_bytes == per_token * 256  # the bound buffers' own bytes
    # no allocator statistics in onnxruntime's Python API: an RSS estimate, labelled so
    assert list(mem.compute_by_buffer) == ["CPU (RSS estimate)"] and mem.compute_bytes >= 0
    assert info.extra["compute_bytes_method"].startswith("estimate: process RSS growth")
    assert info.extra["io_binding"] == "private" and info.extra["n_params_tied_copy"] == 0


def test_cache_path_matches_one_prefill(small_onnx, backend):
    backend.load(_case(small_onnx["fp32"]))
    backend.prefill(TOKENS[:9])
    backend.decode_step(TOKENS[9])
    stepped = backend.last_logits()
    backend.reset()
    backend.prefill(TOKENS[:10])
    np.testing.assert_allclose(stepped, backend.last_logits(), rtol=1e-4, atol=1e-5)
    backend.reset()
    backend.prefill(TOKENS[:9])  # a different last token must change the logits (causality)
    assert not np.allclose(stepped, backend.last_logits(), atol=1e-3)


def test_chunked_prefill_equals_one_chunk(small_onnx, backend):
    backend.load(_case(small_onnx["fp32"], n_batch=4, n_ubatch=4))
    backend.prefill(TOKENS[:10])  # chunks of 4, 4, 2
    chunked, used = backend.last_logits(), backend.kv_used_bytes()
    backend.close()
    backend.load(_case(small_onnx["fp32"]))
    backend.prefill(TOKENS[:10])
    assert used == backend.kv_used_bytes() == PER_TOKEN_KV * 10
    np.testing.assert_allclose(chunked, backend.last_logits(), rtol=1e-4, atol=1e-5)


def test_reset_empties_the_cache(small_onnx, backend):
    backend.load(_case(small_onnx["int4-b32"]))
    backend.prefill(TOKENS[:20])
    backend.reset()
    assert backend.kv_used_bytes() == 0
    backend.prefill(TOKENS[:5])  # stale entries of the longer sequence must not leak in
    after = backend.last_logits()
    backend.close()
    backend.load(_case(small_onnx["int4-b32"]))
    backend.prefill(TOKENS[:5])
    np.testing.assert_allclose(after, backend.last_logits(), rtol=1e-5, atol=1e-6)


def test_ops_tracing(small_onnx, backend):
    backend.load(_case(small_onnx["int8"]))
    backend.ops_begin()
    for rep in range(2):
        backend.reset()
        backend.ops_mark("prefill", rep)
        backend.prefill(TOKENS[:8])
        backend.ops_mark("decode", rep)
        for t in TOKENS[8:11]:
            backend.decode_step(t)
    trace_dir = backend._trace_dir
    events = backend.ops_end()
    assert not os.path.exists(trace_dir)
    assert {(e.phase, e.rep) for e in events} == {("prefill", 0), ("decode", 0), ("prefill", 1), ("decode", 1)}
    assert all(e.op_class in OP_CLASSES and e.ns >= 0 and e.op and e.name for e in events)
    matmul = [e for e in events if e.op_class in ("mul_mat", "mul_mat_vec")]
    assert {e.op_class for e in matmul if e.phase == "decode"} == {"mul_mat_vec"}
    # prefill: lm_head runs on the last position only (as in llama.cpp), so it is a matrix-vector product
    assert {e.op_class for e in matmul if e.phase == "prefill" and "lm_head" not in e.name} == {"mul_mat"}
    assert {e.op_class for e in matmul if e.phase == "prefill" and "lm_head" in e.name} == {"mul_mat_vec"}
    decode0 = [e for e in events if (e.phase, e.rep) == ("decode", 0)]
    prefill0 = [e for e in events if (e.phase, e.rep) == ("prefill", 0)]
    assert len(decode0) == 3 * len(prefill0)  # one prefill run, three decode runs of one graph
    assert {"attention", "norm", "rope"} <= {e.op_class for e in events}
    # the plain session is back, with an empty cache
    assert backend.kv_used_bytes() == 0
    backend.prefill(TOKENS[:4])
    assert backend.kv_used_bytes() == PER_TOKEN_KV * 4


def test_quant_inferred_without_metadata(small_onnx, backend, tmp_path):
    model = onnx.load_model(str(small_onnx["int4-b128"]))
    del model.metadata_props[:]
    onnx.save_model(model, str(tmp_path / "model.onnx"))
    info = backend.load(_case(tmp_path))  # a folder holding model.onnx
    assert info.quant == "int4-b128" and info.n_params == SMALL_PARAMS and info.n_embd == 128


def _concat_decoder(path: Path) -> Path:
    """A one-layer toy decoder whose present = Concat(past, new): the Optimum-style cache."""
    vocab, kv, hd = 16, 2, 4
    rng = np.random.default_rng(0)
    inits = [onnx.numpy_helper.from_array(rng.standard_normal((vocab, kv * hd)).astype(np.float32), "emb"),
             onnx.numpy_helper.from_array(rng.standard_normal((vocab, vocab)).astype(np.float32), "out"),
             onnx.numpy_helper.from_array(np.array([1, -1, kv, hd], np.int64), "shape")]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["x"]),
             helper.make_node("Reshape", ["x", "shape"], ["x4"]),
             helper.make_node("Transpose", ["x4"], ["k"], perm=[0, 2, 1, 3]),
             helper.make_node("Concat", ["past_key_values.0.key", "k"], ["present.0.key"], axis=2),
             helper.make_node("Concat", ["past_key_values.0.value", "k"], ["present.0.value"], axis=2),
             helper.make_node("Gather", ["out", "input_ids"], ["logits"])]
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    graph = helper.make_graph(nodes, "toy", [
        helper.make_tensor_value_info("input_ids", i64, ["b", "s"]),
        helper.make_tensor_value_info("attention_mask", i64, ["b", "t"]),
        helper.make_tensor_value_info("past_key_values.0.key", f32, ["b", kv, "p", hd]),
        helper.make_tensor_value_info("past_key_values.0.value", f32, ["b", kv, "p", hd]),
    ], [helper.make_tensor_value_info("logits", f32, ["b", "s", vocab]),
        helper.make_tensor_value_info("present.0.key", f32, ["b", kv, "t", hd]),
        helper.make_tensor_value_info("present.0.value", f32, ["b", kv, "t", hd])], initializer=inits)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_concat_cache_grows_in_the_runtime(tmp_path, backend):
    info = backend.load(_case(_concat_decoder(tmp_path / "toy.onnx"), n_batch=3, n_ubatch=3))
    assert info.extra["kv_cache"] == "concat" and info.quant == "fp32" and info.n_layer == 1
    backend.prefill([1, 2, 3, 4, 5])
    backend.decode_step(6)
    assert backend.kv_used_bytes() == 2 * 6 * 2 * 4 * 4
    np.testing.assert_array_equal(backend._past[0].numpy()[0, 0, :, 0] != 0, True)
    backend.reset()
    assert backend.kv_used_bytes() == 0


def _add_graph(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "add", [x], [y])
    onnx.save_model(helper.make_model(graph), str(path))
    return path


def test_bad_models_are_input_errors(tmp_path, backend, small_onnx):
    with pytest.raises(InputError, match="does not exist"):
        backend.load(_case(tmp_path / "nope.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError, match="not an ONNX model"):
        backend.load(_case(junk))
    with pytest.raises(InputError, match="not a decoder with KV-cache inputs: missing input_ids"):
        backend.load(_case(_add_graph(tmp_path / "add.onnx")))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds 0 .onnx files"):
        backend.load(_case(empty))
    with pytest.raises(InputError, match="'tensorrt' is not available.*available: .*CPUExecutionProvider"):
        backend.load(_case(small_onnx["fp32"], ep="tensorrt"))


def test_versions_and_class_facts(backend):
    v = backend.versions()
    assert v["onnxruntime"] and "CPUExecutionProvider" in v["providers_available"]
    assert OnnxRuntimeBackend.capabilities == {"ops", "kv_bytes", "logits"}
    assert OnnxRuntimeBackend.check_quant("INT8") == "int8" and OnnxRuntimeBackend.check_quant("Q8_0") is None


def test_graph_optimization_level_reaches_the_session(small_onnx, tmp_path):
    from edgebench.run.runner import run_worker

    model = str(small_onnx["fp32"])
    for level in ("disable", "all"):
        res = run_worker(Case(backend="onnxruntime", model=model, n_prompt=8, n_gen=2, reps=1, graph_opt=level),
                         tmp_path / f"{level}.log")
        assert res.status == "ok", res.error


def _decode_logits(model) -> tuple[str, np.ndarray]:
    b = OnnxRuntimeBackend()
    try:
        info = b.load(_case(model))
        b.prefill(TOKENS[:10])
        for t in TOKENS[10:13]:
            b.decode_step(t)
        return info.extra["io_binding"], b.last_logits()
    finally:
        b.close()


def test_public_io_binding_path_matches_the_private_one(small_onnx, monkeypatch):
    kind, fast = _decode_logits(small_onnx["int4-b32"])
    assert kind == "private"
    monkeypatch.setenv("EDGEBENCH_ORT_BINDING", "public")
    kind, public = _decode_logits(small_onnx["int4-b32"])
    assert kind == "public"
    np.testing.assert_array_equal(fast, public)


def test_missing_private_binding_objects_fall_back_with_a_warning(small_onnx, monkeypatch):
    from edgebench.backends import ort_binding

    # as if a new onnxruntime renamed a pybind method the fast path calls
    monkeypatch.setitem(ort_binding.PRIVATE_API, "binding", ("bind_ortvalue_input", "renamed_in_a_new_release"))
    with pytest.warns(RuntimeWarning, match=r"binding\.renamed_in_a_new_release\); using the public IOBinding"):
        kind, logits = _decode_logits(small_onnx["fp32"])
    assert kind == "public" and np.isfinite(logits).all()
