"""Shape-faithful synthetic decoder ONNX models: a preset's shapes, random weights.

The graph has the KV-cache layout of Hugging Face Optimum / onnxruntime-genai exports:
inputs ``input_ids`` [batch, seq], ``attention_mask`` [batch, total_seq], ``position_ids``
[batch, seq] (int64) and ``past_key_values.N.key|value`` [batch, n_head_kv, past_seq, head_dim];
outputs ``logits`` [batch, seq, vocab] and ``present.N.key|value`` [batch, n_head_kv, total_seq,
head_dim]. Each layer is a Llama block built like onnxruntime-genai's builder builds it for CPU and
CUDA: RMSNorm written in standard ops (onnxruntime fuses it into SimplifiedLayerNormalization),
com.microsoft RotaryEmbedding, com.microsoft GroupQueryAttention (past + current, causal), output
projection, SwiGLU MLP, residuals; a final norm and the lm_head. A tied model stores the matrix
once, as the [n_embd, n_vocab] lm_head (what the quantizers quantize); the embedding lookup reads
it, at every level (models.onnx_tied; ``edgebench.tied`` / ``edgebench.tied_shared`` in metadata).

The other levels are quantized from the fp32 model by onnxruntime's own MatMulNBitsQuantizer
(com.microsoft MatMulNBits: int8 in blocks of 32, int4 in blocks of 32 or 128, the lm_head of an
int4 level at 8 bits), one recipe per level in models.onnx_quant; the levels are
models.quant_levels.ONNX_QUANTS. Every build is stamped with its level's recipe version and a
cached build of an older recipe is rebuilt (models.onnx_recipe). models.synth_genai puts a model
in an onnxruntime-genai folder.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgebench.models.cache import locked, models_dir
from edgebench.models.presets import Preset, get_preset
from edgebench.models.quant_levels import ONNX_QUANTS

OPSET = 17  # ReduceMean with an axes attribute; old enough for JetPack's onnxruntime builds
IR_VERSION = 8
EXTERNAL_DATA_ABOVE = 1_800_000_000  # bytes: protobuf cannot hold a model over 2 GB
LOGITS_TO_KEEP = "num_logits_to_keep"  # optional int64 [1] input: logits of the last N positions, 0 = all

Progress = Callable[[int, int], None] | None  # (done_bytes, total_bytes), like edgebench.synth


def _weight_shapes(p: Preset) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init) of every weight, in graph order. init: "normal" or "ones"."""
    q_dim, kv_dim = p.n_head * p.head_dim, p.n_head_kv * p.head_dim
    out = [("model.embed_tokens.weight", (p.n_vocab, p.n_embd), "normal")]
    for i in range(p.n_layer):
        pre = f"model.layers.{i}"
        out.append((f"{pre}.input_layernorm.weight", (p.n_embd,), "ones"))
        for proj, dim in (("q_proj", q_dim), ("k_proj", kv_dim), ("v_proj", kv_dim)):
            out.append((f"{pre}.self_attn.{proj}.weight", (p.n_embd, dim), "normal"))
            if p.qkv_bias:
                out.append((f"{pre}.self_attn.{proj}.bias", (dim,), "normal"))
        out.append((f"{pre}.self_attn.o_proj.weight", (q_dim, p.n_embd), "normal"))
        out.append((f"{pre}.post_attention_layernorm.weight", (p.n_embd,), "ones"))
        out.append((f"{pre}.mlp.gate_proj.weight", (p.n_embd, p.n_ff), "normal"))
        out.append((f"{pre}.mlp.up_proj.weight", (p.n_embd, p.n_ff), "normal"))
        out.append((f"{pre}.mlp.down_proj.weight", (p.n_ff, p.n_embd), "normal"))
    out.append(("model.norm.weight", (p.n_embd,), "ones"))
    out.append(("lm_head.weight", (p.n_embd, p.n_vocab), "tied" if p.tied else "normal"))
    return out


class _Writer:
    """Makes initializers, inline or appended to one external-data file (page-aligned)."""

    def __init__(self, data_path: Path | None):
        self.data_path = data_path
        self._f = open(data_path, "wb") if data_path else None
        self.tensors = []

    def add(self, name: str, arr: np.ndarray) -> None:
        from onnx import TensorProto, numpy_helper

        if self._f is None:
            self.tensors.append(numpy_helper.from_array(arr, name))
            return
        offset = -(-self._f.tell() // 4096) * 4096
        self._f.seek(offset)
        data = np.ascontiguousarray(arr).tobytes()
        self._f.write(data)
        t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=arr.shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.data_path.name), ("offset", str(offset)), ("length", str(len(data)))):
            e = t.external_data.add()
            e.key, e.value = k, v
        self.tensors.append(t)

    def close(self) -> None:
        if self._f:
            self._f.close()


def _graph_nodes(p: Preset) -> tuple[list, list, list]:
    """Nodes, graph inputs and graph outputs of the decoder (weights are referenced by name)."""
    from onnx import TensorProto, helper

    nodes: list = []

    def node(op, inputs, name, n_out=1, domain="", **attrs):
        outs = [f"{name}/output_{k}" for k in range(n_out)]
        nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        return outs[0] if n_out == 1 else outs

    def const(name, value, dtype=np.float32):
        arr = np.asarray(value, dtype=dtype)
        from onnx import numpy_helper

        nodes.append(helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(arr, name)))
        return name

    def rms_norm(x, weight, name):
        # The pattern onnxruntime's SimplifiedLayerNormFusion turns into one node.
        sq = node("Pow", [x, two], f"{name}/Pow")
        mean = node("ReduceMean", [sq], f"{name}/ReduceMean", axes=[-1], keepdims=1)
        var = node("Add", [mean, eps], f"{name}/Add")
        std = node("Sqrt", [var], f"{name}/Sqrt")
        normed = node("Div", [x, std], f"{name}/Div")
        return node("Mul", [weight, normed], f"{name}/Mul")

    two = const("/model/constants/two", 2.0)
    eps = const("/model/constants/eps", p.norm_eps)

    # Attention bookkeeping from the mask, as genai's builder does: seqlens_k = total - 1.
    mask_sum = node("ReduceSum", ["attention_mask", const("/model/constants/axis1", [1], np.int64)],
                    "/model/attn_mask_reformat/ReduceSum", keepdims=0)
    seqlens = node("Sub", [mask_sum, const("/model/constants/one_i64", 1, np.int64)], "/model/attn_mask_reformat/Sub")
    seqlens_k = node("Cast", [seqlens], "/model/attn_mask_reformat/seqlens_k", to=TensorProto.INT32)
    mask_shape = node("Shape", ["attention_mask"], "/model/attn_mask_reformat/Shape")
    total_len = node("Gather", [mask_shape, const("/model/constants/idx1", 1, np.int64)],
                     "/model/attn_mask_reformat/Gather", axis=0)
    total_len_i32 = node("Cast", [total_len], "/model/attn_mask_reformat/total_seq_len", to=TensorProto.INT32)

    # cos/sin caches for positions 0..total-1, computed in the graph (no [n_ctx_train, d] weight).
    rot_dim = int(p.head_dim * p.partial_rotary) // 2 * 2
    inv_freq = 1.0 / (p.rope_theta ** (np.arange(0, rot_dim, 2, dtype=np.float64) / rot_dim))
    pos = node("Range", [const("/model/constants/zero_i64", 0, np.int64), total_len,
                         const("/model/constants/one_i64b", 1, np.int64)], "/model/rotary/Range")
    pos_f = node("Cast", [pos], "/model/rotary/Cast", to=TensorProto.FLOAT)
    pos_col = node("Unsqueeze", [pos_f, const("/model/constants/axes1", [1], np.int64)], "/model/rotary/Unsqueeze")
    freqs = node("Mul", [pos_col, const("/model/constants/inv_freq", inv_freq[None, :], np.float32)],
                 "/model/rotary/Mul")
    cos_cache = node("Cos", [freqs], "/model/rotary/Cos")
    sin_cache = node("Sin", [freqs], "/model/rotary/Sin")
    rope_attrs = {"interleaved": 0}
    if rot_dim != p.head_dim:
        rope_attrs["rotary_embedding_dim"] = rot_dim

    x = node("Gather", ["model.embed_tokens.weight", "input_ids"], "/model/embed_tokens/Gather", axis=0)
    for i in range(p.n_layer):
        pre, w = f"/model/layers.{i}", f"model.layers.{i}"
        h = rms_norm(x, f"{w}.input_layernorm.weight", f"{pre}/input_layernorm")
        qkv = []
        for proj in ("q_proj", "k_proj", "v_proj"):
            y = node("MatMul", [h, f"{w}.self_attn.{proj}.weight"], f"{pre}/self_attn/{proj}/MatMul")
            if p.qkv_bias:
                y = node("Add", [y, f"{w}.self_attn.{proj}.bias"], f"{pre}/self_attn/{proj}/Add")
            qkv.append(y)
        q = node("RotaryEmbedding", [qkv[0], "position_ids", cos_cache, sin_cache], f"{pre}/self_attn/q_rotary",
                 domain="com.microsoft", num_heads=p.n_head, **rope_attrs)
        k = node("RotaryEmbedding", [qkv[1], "position_ids", cos_cache, sin_cache], f"{pre}/self_attn/k_rotary",
                 domain="com.microsoft", num_heads=p.n_head_kv, **rope_attrs)
        attn_name = f"{pre}/self_attn/GroupQueryAttention"
        nodes.append(helper.make_node(
            "GroupQueryAttention",
            [q, k, qkv[2], f"past_key_values.{i}.key", f"past_key_values.{i}.value", seqlens_k, total_len_i32],
            [f"{attn_name}/output_0", f"present.{i}.key", f"present.{i}.value"],
            name=attn_name, domain="com.microsoft", num_heads=p.n_head, kv_num_heads=p.n_head_kv,
            scale=1.0 / math.sqrt(p.head_dim)))
        o = node("MatMul", [f"{attn_name}/output_0", f"{w}.self_attn.o_proj.weight"], f"{pre}/self_attn/o_proj/MatMul")
        x = node("Add", [x, o], f"{pre}/residual_attn/Add")
        h = rms_norm(x, f"{w}.post_attention_layernorm.weight", f"{pre}/post_attention_layernorm")
        gate = node("MatMul", [h, f"{w}.mlp.gate_proj.weight"], f"{pre}/mlp/gate_proj/MatMul")
        up = node("MatMul", [h, f"{w}.mlp.up_proj.weight"], f"{pre}/mlp/up_proj/MatMul")
        silu = node("Mul", [gate, node("Sigmoid", [gate], f"{pre}/mlp/act_fn/Sigmoid")], f"{pre}/mlp/act_fn/Mul")
        down = node("MatMul", [node("Mul", [silu, up], f"{pre}/mlp/Mul"), f"{w}.mlp.down_proj.weight"],
                    f"{pre}/mlp/down_proj/MatMul")
        x = node("Add", [x, down], f"{pre}/residual_mlp/Add")
    # Logits of the last num_logits_to_keep positions only (0: all), as HF's logits_to_keep: the
    # backend feeds 1 (llama.cpp computes the last position's logits only), the quality pass 0.
    # The input has an initializer (0) as its default, so a runtime that does not feed it
    # (onnxruntime-genai) gets every position, as from any Optimum export.
    keep = node("Neg", [LOGITS_TO_KEEP], "/model/logits_to_keep/Neg")
    x = node("Slice", [x, keep, const("/model/constants/int64_max", [np.iinfo(np.int64).max], np.int64),
                       const("/model/constants/axes_seq", [1], np.int64)], "/model/logits_to_keep/Slice")
    h = rms_norm(x, "model.norm.weight", "/model/norm")
    nodes.append(helper.make_node("MatMul", [h, "lm_head.weight"], ["logits"], name="/lm_head/MatMul"))

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [
        helper.make_tensor_value_info("input_ids", i64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", i64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", i64, ["batch_size", "sequence_length"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch_size", "logits_length", p.n_vocab])]
    for i in range(p.n_layer):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kv}", f32, ["batch_size", p.n_head_kv, "past_sequence_length", p.head_dim]))
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kv}", f32, ["batch_size", p.n_head_kv, "total_sequence_length", p.head_dim]))
    inputs.append(helper.make_tensor_value_info(LOGITS_TO_KEEP, i64, [1]))
    return nodes, inputs, outputs


def _metadata(p: Preset, quant: str) -> dict[str, str]:
    return {
        "edgebench.preset": p.name, "edgebench.quant": quant, "edgebench.synthetic": "1",
        "edgebench.arch": p.arch, "edgebench.tied": "1" if p.tied else "0",
        "edgebench.n_layer": str(p.n_layer), "edgebench.n_embd": str(p.n_embd),
        "edgebench.n_head": str(p.n_head), "edgebench.n_head_kv": str(p.n_head_kv),
        "edgebench.head_dim": str(p.head_dim), "edgebench.n_ff": str(p.n_ff),
        "edgebench.n_vocab": str(p.n_vocab), "edgebench.n_ctx_train": str(p.n_ctx_train),
    }


def _set_metadata(model, props: dict[str, str]) -> None:
    keep = [(e.key, e.value) for e in model.metadata_props if e.key not in props]
    del model.metadata_props[:]
    for k, v in keep + sorted(props.items()):
        e = model.metadata_props.add()
        e.key, e.value = k, v


Weights = Callable[[str, tuple[int, ...]], np.ndarray]  # (onnx name, shape) -> float32 array


def write_onnx(preset: Preset, path: Path, seed: int = 0, progress: Progress = None,
               weights: Weights | None = None, metadata: dict[str, str] | None = None) -> Path:
    """Write the fp32 decoder for ``preset`` to ``path`` (weights in ``path.data`` beside it when
    they pass ~1.8 GB). Random weights, N(0, 0.02) from ``seed``, norms ones, unless ``weights``
    gives each tensor (models.gguf_to_onnx: a GGUF's own); ``metadata`` adds to / overrides the
    edgebench.* metadata_props. ``progress(done_bytes, total_bytes)`` follows the weights. Blocks."""
    import onnx
    from onnx import helper

    from edgebench.models.onnx_recipe import stamp
    from edgebench.models.onnx_tied import share_tied_embedding

    path = Path(path)
    shapes = _weight_shapes(preset)
    total = sum(4 * math.prod(s) for _, s, _ in shapes)
    data_path = path.with_name(path.name + ".data") if total > EXTERNAL_DATA_ABOVE else None
    rng = np.random.default_rng(seed)
    writer = _Writer(data_path)
    embed, done = None, 0
    try:
        for name, shape, init in shapes:
            if init == "ones" and weights is None:
                arr = np.ones(shape, np.float32)
            elif init == "tied":
                arr = np.ascontiguousarray(embed.T)
            elif weights is not None:
                arr = np.ascontiguousarray(weights(name, shape), dtype=np.float32)
                if arr.shape != shape:
                    raise ValueError(f"{name}: weight source gave shape {arr.shape}, the graph needs {shape}")
            else:
                arr = rng.standard_normal(shape, dtype=np.float32)
                arr *= 0.02
            if name == "model.embed_tokens.weight" and preset.tied:
                embed = arr  # not stored: the embedding reads lm_head.weight (models.onnx_tied)
            else:
                writer.add(name, arr)
            done += arr.nbytes
            del arr
            if progress:
                progress(done, total)
    finally:
        writer.close()
    nodes, inputs, outputs = _graph_nodes(preset)
    keep_default = helper.make_tensor(LOGITS_TO_KEEP, onnx.TensorProto.INT64, [1], [0])
    graph = helper.make_graph(nodes, f"edgebench-{preset.name}", inputs, outputs,
                              initializer=writer.tensors + [keep_default])
    model = helper.make_model(graph, producer_name="edgebench", ir_version=IR_VERSION,
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)])
    _set_metadata(model, _metadata(preset, "fp32") | (metadata or {}))
    stamp(model, "fp32")
    share_tied_embedding(model)
    onnx.save_model(model, str(path))
    return path


def ensure_onnx_model(preset: str | Preset, quant: str, cache: Path | None = None,
                      progress: Progress = None) -> Path:
    """Path of ``<cache>/models/<preset>-<quant>.onnx``, built first if the cache lacks it (see
    ensure_level). Blocks (a large preset takes minutes)."""
    p, q = (preset if isinstance(preset, Preset) else get_preset(preset)), ONNX_QUANTS.check(quant)
    models = models_dir(cache)
    models.mkdir(parents=True, exist_ok=True)
    return ensure_level(models / f"{p.name}-{q}.onnx", q, lambda out: write_onnx(p, out, progress=progress),
                        lambda: ensure_onnx_model(p, "fp32", cache, progress), progress)


def ensure_level(target: Path, quant: str, write_fp32: Callable[[Path], object],
                 fp32_model: Callable[[], Path], progress: Progress = None) -> Path:
    """``target`` (the model at ``quant``), built first if it does not exist or was built by an
    older recipe (models.onnx_recipe: then it is replaced): ``write_fp32(path)`` writes the fp32
    level, any other level is quantized from ``fp32_model()`` (the cached fp32 model, built or
    rebuilt first if need be).

    Builds under a temporary folder beside the target and renames into place when complete
    (external data first, the .onnx last: the .onnx's presence means the model is whole); a lock
    file per target serialises concurrent builders. ``progress(done_bytes, total_bytes)`` follows
    a build. Blocks."""
    from edgebench.models.onnx_quant import quantize
    from edgebench.models.onnx_recipe import is_current

    if target.exists() and is_current(target, quant):
        return target
    src = fp32_model() if quant != "fp32" else None
    folder = target.parent
    with locked(target):
        if target.exists() and is_current(target, quant):
            return target
        if target.exists():  # stale: the .onnx goes first (its presence means the model is whole)
            target.unlink()
            target.with_name(target.name + ".data").unlink(missing_ok=True)
        for stale in folder.glob(f".{target.name}.tmp-*"):  # left by a killed builder; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=folder))
        try:
            out = tmp / target.name
            if src is None:
                write_fp32(out)
            else:  # the quantizers report nothing on the way
                size = sum(f.stat().st_size for f in src.parent.glob(src.name + "*") if not f.name.endswith(".lock"))
                if progress:
                    progress(0, size)
                quantize(src, out, quant)
                if progress:
                    progress(size, size)
            data = out.with_name(out.name + ".data")
            if data.exists():
                os.replace(data, target.with_name(data.name))
            os.replace(out, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target
