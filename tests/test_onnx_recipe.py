"""The ONNX levels' build recipes (models.onnx_quant) and the recipe stamp that keeps the model cache from
reusing a build an older recipe made (models.onnx_recipe)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

from edgebench.models import onnx_recipe
from edgebench.models.presets import PRESETS
from edgebench.models.quant_levels import ONNX_QUANTS, ONNX_RECIPES
from edgebench.models.synth_onnx import ensure_onnx_model

SMALL = dataclasses.replace(PRESETS["smollm-135m"], name="test-recipe", n_layer=2, n_embd=128, n_head=4,
                            n_head_kv=2, head_dim=32, n_ff=256, n_vocab=512)


def _meta(path) -> dict[str, str]:
    return {e.key: e.value for e in onnx.load_model(str(path), load_external_data=False).metadata_props}


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load_model(str(path), load_external_data=False).graph.node}


def test_every_level_has_a_recipe_and_every_build_is_stamped(tmp_path):
    assert set(ONNX_RECIPES) == set(ONNX_QUANTS.levels)
    for q in ("fp32", "int8", "int4-b32"):
        path = ensure_onnx_model(SMALL, q, cache=tmp_path)
        meta = _meta(path)
        assert meta["edgebench.quant"] == q and meta[onnx_recipe.RECIPE_KEY] == onnx_recipe.recipe(q)
        assert onnx_recipe.read_metadata_props(path) == meta  # the header reader sees what onnx parses
    assert onnx_recipe.recipe("int8") == f"int8/{ONNX_RECIPES['int8']}; fp32/{ONNX_RECIPES['fp32']}"


def test_header_reader_on_external_data_and_on_garbage(tmp_path, monkeypatch):
    from edgebench.models import synth_onnx

    monkeypatch.setattr(synth_onnx, "EXTERNAL_DATA_ABOVE", 100_000)
    path = ensure_onnx_model(SMALL, "int8", cache=tmp_path)
    assert path.with_name(path.name + ".data").exists()
    assert onnx_recipe.read_metadata_props(path) == _meta(path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff" * 64)
    assert not onnx_recipe.is_current(junk, "int8")  # unreadable: rebuilt, not trusted
    assert not onnx_recipe.is_current(tmp_path / "missing.onnx", "int8")


def _unstamped_copy(src, dst, quant: str) -> None:
    """``src`` rewritten at ``dst`` as a build from before the stamp: edgebench.quant = quant, no recipe."""
    model = onnx.load_model(str(src))
    keep = [(e.key, e.value) for e in model.metadata_props if e.key not in ("edgebench.quant", onnx_recipe.RECIPE_KEY)]
    del model.metadata_props[:]
    for k, v in keep + [("edgebench.quant", quant)]:
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.save_model(model, str(dst))


def test_a_stale_cached_level_is_rebuilt_and_a_current_one_reused(tmp_path, monkeypatch):
    """The cache's only key is the file name: an int8 an older recipe built (unstamped, as every build
    before the stamp) is replaced by the current recipe's, and a current build is left as it is."""
    fp32 = ensure_onnx_model(SMALL, "fp32", cache=tmp_path)
    int8 = fp32.with_name("test-recipe-int8.onnx")
    _unstamped_copy(fp32, int8, "int8")  # a stand-in old build: no MatMulNBits in it
    assert "MatMulNBits" not in _ops(int8) and not onnx_recipe.is_current(int8, "int8")
    fp32_built = fp32.stat().st_mtime_ns
    assert ensure_onnx_model(SMALL, "int8", cache=tmp_path) == int8
    assert "MatMulNBits" in _ops(int8) and _meta(int8)[onnx_recipe.RECIPE_KEY] == onnx_recipe.recipe("int8")
    assert fp32.stat().st_mtime_ns == fp32_built  # fp32's recipe did not change: its build stays
    built = int8.stat().st_mtime_ns
    assert ensure_onnx_model(SMALL, "int8", cache=tmp_path) == int8 and int8.stat().st_mtime_ns == built

    # a new fp32 recipe rebuilds fp32 and, through the "; fp32/<m>" part of their stamps, its levels
    monkeypatch.setitem(ONNX_RECIPES, "fp32", ONNX_RECIPES["fp32"] + 1)
    assert not onnx_recipe.is_current(int8, "int8")
    ensure_onnx_model(SMALL, "int8", cache=tmp_path)
    new_fp32 = f"fp32/{ONNX_RECIPES['fp32']}"
    assert _meta(fp32)[onnx_recipe.RECIPE_KEY] == new_fp32
    assert _meta(int8)[onnx_recipe.RECIPE_KEY] == f"int8/{ONNX_RECIPES['int8']}; {new_fp32}"
    assert sorted(p.name for p in tmp_path.joinpath("models").iterdir() if p.name.startswith(".")) == []


def test_a_stale_build_with_external_data_leaves_none_behind(tmp_path, monkeypatch):
    from edgebench.models import synth_onnx

    monkeypatch.setattr(synth_onnx, "EXTERNAL_DATA_ABOVE", 100_000)
    path = ensure_onnx_model(SMALL, "int4-b32", cache=tmp_path)
    data = path.with_name(path.name + ".data")
    assert data.exists()
    monkeypatch.setattr(synth_onnx, "EXTERNAL_DATA_ABOVE", 10**12)  # the new build keeps its weights inline
    monkeypatch.setitem(ONNX_RECIPES, "int4-b32", ONNX_RECIPES["int4-b32"] + 1)
    ensure_onnx_model(SMALL, "int4-b32", cache=tmp_path)
    assert not data.exists() and onnx_recipe.is_current(path, "int4-b32")


@pytest.mark.parametrize("quant", ["int8", "int4-b32"])
def test_the_shared_embedding_is_the_quantized_lm_head(tmp_path, quant):
    """The tied lookup (GatherBlockQuantized on the lm_head's MatMulNBits weight, 8 or 4 bits) gives
    the fp32 embedding within half a quantization step of its block: the two ops agree on the
    packing and on the implicit zero point 2^(bits-1) of a symmetric weight."""
    import onnxruntime as ort
    from onnx import numpy_helper

    fp32 = onnx.load_model(str(ensure_onnx_model(SMALL, "fp32", cache=tmp_path)))
    table = numpy_helper.to_array(next(t for t in fp32.graph.initializer if t.name == "lm_head.weight")).T
    path = ensure_onnx_model(SMALL, quant, cache=tmp_path)
    model = onnx.load_model(str(path))
    lm = next(n for n in model.graph.node if n.name.startswith("/lm_head/MatMul"))
    bits = {a.name: a.i for a in lm.attribute}["bits"]
    assert bits == 8  # models.onnx_quant: 8-bit lm_head (the embedding) at every CPU level
    tied = [n for n in model.graph.node if n.name.startswith("/model/embed_tokens/tied/")]
    assert "GatherBlockQuantized" in {n.op_type for n in tied}
    used = {i for n in tied for i in n.input}
    graph = onnx.helper.make_graph(
        tied, "embed", [onnx.helper.make_tensor_value_info("input_ids", onnx.TensorProto.INT64, [1, None])],
        [onnx.helper.make_tensor_value_info(tied[-1].output[0], onnx.TensorProto.FLOAT, None)],
        initializer=[t for t in model.graph.initializer if t.name in used])
    embed = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    ids = np.arange(SMALL.n_vocab, dtype=np.int64)[None, :]
    got = ort.InferenceSession(embed.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input_ids": ids})[0][0]
    blocks = table.reshape(SMALL.n_vocab, -1, 32)
    # onnxruntime's symmetric step is absmax / 2^(bits-1) (the largest |w| maps to -2^(bits-1), as
    # llama.cpp's Q4_0 does): rounding errs by half a step, the clipped +2^(bits-1) by up to one;
    # a zero point the two ops disagreed on would put every value 2^(bits-1) steps off
    step = np.abs(blocks).max(-1, keepdims=True) / 2 ** (bits - 1)
    err = np.abs(got.reshape(blocks.shape) - blocks) / step
    assert err.max() <= 1.0 + 1e-4 and err.mean() < 0.3, (float(err.max()), float(err.mean()))
