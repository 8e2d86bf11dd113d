"""The model shape is defined once (models.shape.ModelShape): presets, GGUF headers, loaded-model
info and the memory projection all hold it; the quant levels likewise live in one place."""

from __future__ import annotations

import dataclasses

import pytest

from edgebench.backends.base import ModelInfo
from edgebench.backends.fake import FakeBackend
from edgebench.errors import InputError
from edgebench.models.gguf_file import GGUFInfo
from edgebench.models.presets import PRESETS, Preset, preset_n_params
from edgebench.models.quant_levels import GGUF_QUANTS, ONNX_QUANTS
from edgebench.models.shape import ModelShape

SHAPE_FIELDS = ("name", "arch", "n_embd", "n_layer", "n_head", "n_head_kv", "head_dim", "n_ff", "n_vocab", "tied",
                "n_ctx_train")


def test_every_shape_holder_is_a_model_shape():
    assert [f.name for f in dataclasses.fields(ModelShape)] == list(SHAPE_FIELDS)
    for cls in (Preset, GGUFInfo, ModelInfo):
        assert issubclass(cls, ModelShape)
        assert [f.name for f in dataclasses.fields(cls)][:len(SHAPE_FIELDS)] == list(SHAPE_FIELDS)


def test_shapes_are_validated():
    with pytest.raises(ValueError, match="n_layer must be an integer >= 0"):
        dataclasses.replace(PRESETS["tiny"], n_layer=-1)


def _info(**kw) -> ModelInfo:
    shape = {f.name: getattr(PRESETS["tiny"], f.name) for f in dataclasses.fields(ModelShape)}
    return ModelInfo(**(shape | {"name": "m", "quant": "F16", "bpw": 16.0, "n_params": 10, "model_bytes": 20,
                                 "n_ctx_runtime": 256} | kw))


def test_stored_model_info_keeps_its_keys():
    d = _info(extra={"embed_params": 3}).to_dict()
    assert list(d) == ["model_name", "arch", "quant", "bpw", "n_params", "model_bytes", "n_layer", "n_embd", "n_head",
                       "n_head_kv", "head_dim", "n_vocab", "n_ctx_train", "n_ctx_runtime", "extra"]
    assert d["model_name"] == "m" and d["extra"] == {"embed_params": 3} and d["n_layer"] == 2
    assert _info().model_name == "m"


def test_preset_parameter_count_needs_no_runtime():
    assert preset_n_params(PRESETS["smollm-135m"]) == pytest.approx(134.5e6, rel=0.01)


def test_backend_quant_levels_come_from_their_family():
    from edgebench.backends.llama_cpp import LlamaCppBackend
    from edgebench.backends.onnxruntime import OnnxRuntimeBackend

    assert (LlamaCppBackend.quant_levels, LlamaCppBackend.default_ladder) == (GGUF_QUANTS.levels, GGUF_QUANTS.ladder)
    assert (OnnxRuntimeBackend.quant_levels, OnnxRuntimeBackend.default_ladder) == (ONNX_QUANTS.levels,
                                                                                    ONNX_QUANTS.ladder)
    assert LlamaCppBackend.check_quant("q4_k_m") == "Q4_K_M" and LlamaCppBackend.check_quant("int8") is None
    assert FakeBackend.check_quant("F16") is None and FakeBackend.quant_levels == ()
    with pytest.raises(InputError, match="unknown onnx quant level 'Q4_K_M'; valid: fp32, int8"):
        ONNX_QUANTS.check("Q4_K_M")
