"""What an ONNX decoder graph holds, read from the graph itself, not assumed from its file name.

The KV-cache layout (``past_key_values.N.key|value`` in, ``present.N.key|value`` out, their
shapes and dtype, the optional inputs, whether GroupQueryAttention shares past and present
buffers), the parameter count and bytes of the initializers, and the quantization they show.
Only the ONNX backends (onnxruntime, onnxruntime-genai) import this module, when they load a
model: onnx is imported at its top.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgebench.errors import InputError
from edgebench.models.synth_onnx import LOGITS_TO_KEEP

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_PRESENT = re.compile(r"^present\.(\d+)\.(key|value)$")
_FEEDABLE = {"input_ids", "attention_mask", "position_ids", "use_cache_branch", LOGITS_TO_KEEP}
_PARAM_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
# Inputs of quantized ops that hold scales / zero points / indices, not parameters.
_QUANT_AUX = {"MatMulNBits": (2, 3, 4), "MatMulInteger": (2, 3), "DynamicQuantizeMatMul": (2, 3),
              "MatMulIntegerToFloat": (2, 3, 4, 5), "DequantizeLinear": (1, 2), "QuantizeLinear": (1, 2),
              "GatherBlockQuantized": (2, 3)}
_INT8_OPS = {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul"}


def _tensor_bytes(t: onnx.TensorProto) -> int:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        ext = {e.key: e.value for e in t.external_data}
        if "length" in ext:
            return int(ext["length"])
    elif t.raw_data:
        return len(t.raw_data)
    n = math.prod(t.dims)
    if t.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (n + 1) // 2
    return n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize


def count_weights(graph: onnx.GraphProto) -> tuple[int, int, dict[str, int]]:
    """(n_params, bytes, op counts). Packed 4-bit weights count their unpacked K*N elements;
    scales, zero points, scalars and integer shape constants are bytes but not parameters."""
    aux: set[str] = set()
    unpacked: dict[str, int] = {}
    ops: dict[str, int] = {}
    for n in graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
        aux.update(n.input[i] for i in _QUANT_AUX.get(n.op_type, ()) if i < len(n.input))
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "MatMulNBits":
            unpacked[n.input[1]] = int(attrs["K"]) * int(attrs["N"])
        elif n.op_type == "GatherBlockQuantized":  # genai's quantized embedding: bytes hold 8 // bits
            packed = next((t for t in graph.initializer if t.name == n.input[0]), None)
            if packed is not None and packed.data_type == onnx.TensorProto.UINT8:
                unpacked[n.input[0]] = math.prod(packed.dims) * 8 // int(attrs.get("bits", 4))
    n_params = n_bytes = 0
    overridable = {vi.name for vi in graph.input}  # an input's default value, not a weight
    for t in graph.initializer:
        if t.name in overridable:
            continue
        n_bytes += _tensor_bytes(t)
        n = math.prod(t.dims)
        if t.name in unpacked:
            n_params += unpacked[t.name]
        elif t.name not in aux and n > 1 and t.data_type in _PARAM_TYPES:
            n_params += n
    return n_params, n_bytes, ops


def infer_quant(graph: onnx.GraphProto, ops: dict[str, int]) -> str:
    for n in graph.node:
        if n.op_type == "MatMulNBits":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            return f"int{attrs.get('bits', 4)}-b{attrs['block_size']}"
    if _INT8_OPS & ops.keys():
        return "int8"
    by_type: dict[int, int] = {}
    for t in graph.initializer:
        by_type[t.data_type] = by_type.get(t.data_type, 0) + _tensor_bytes(t)
    main = max(by_type, key=by_type.get) if by_type else onnx.TensorProto.FLOAT
    return {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16",
            onnx.TensorProto.INT8: "int8"}.get(main, "fp32")


def value_shape(vi: onnx.ValueInfoProto) -> list[int | None]:
    """The declared shape of an input or output; None for symbolic dims (batch, sequence)."""
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


def _embedding_width(graph: onnx.GraphProto) -> int:
    """n_embd from the table the input_ids lookup reads (0 when there is none): a [n_vocab, n_embd]
    Gather, a tied lookup into the [n_embd, n_vocab] lm_head (Gather axis 1, models.onnx_tied), or
    GatherBlockQuantized on packed [n_vocab, blocks, bytes] (8 // bits values per uint8)."""
    node = next((n for n in graph.node if n.op_type in ("Gather", "GatherBlockQuantized")
                 and len(n.input) > 1 and n.input[1] == "input_ids"), None)
    table = next((t for t in graph.initializer if node is not None and t.name == node.input[0]), None)
    if table is None or len(table.dims) < 2:
        return 0
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Gather":
        return table.dims[0] if attrs.get("axis", 0) == 1 else table.dims[1]
    per_byte = 8 // int(attrs.get("bits", 4)) if table.data_type == onnx.TensorProto.UINT8 else 1
    return math.prod(table.dims[1:]) * per_byte


@dataclass(frozen=True)
class GraphLayout:
    """The inputs and outputs a decoder graph is fed and read through, and the facts they tell."""

    n_layer: int
    n_kv: int  # KV heads
    head_dim: int
    kv_dtype: np.dtype
    past_names: list[str]  # past_key_values.N.key|value, layer by layer
    out_names: list[str]  # "logits", then present.N.key|value in the order of past_names
    has_pos: bool  # position_ids is an input
    has_branch: bool  # use_cache_branch is an input (Optimum's merged decoders)
    vocab: int  # 0 when the logits shape does not say
    logits_itemsize: int
    embd: int  # from the embedding table fed by input_ids; 0 when there is none
    gqa_heads: int  # num_heads of the attention ops; 0 when there are none
    kv_shared: bool  # present is written into the past buffer (see read_layout)
    has_keep: bool  # num_logits_to_keep is an input (optional: an initializer may default it)


def read_layout(path: Path, graph: onnx.GraphProto) -> GraphLayout:
    """The decoder layout of ``graph``; InputError (naming ``path``) for a graph edgebench cannot feed."""
    inits = {t.name for t in graph.initializer}
    inputs = {vi.name: vi for vi in graph.input if vi.name not in inits}
    outputs = {vi.name: vi for vi in graph.output}
    past = {(int(m[1]), m[2]): n for n in inputs if (m := _PAST.match(n))}
    present = {(int(m[1]), m[2]): n for n in outputs if (m := _PRESENT.match(n))}
    missing = [n for n in ("input_ids", "attention_mask") if n not in inputs]
    missing += [] if "logits" in outputs else ["output logits"]
    n_layer = 1 + max((i for i, _ in past), default=-1)
    want = {(i, kv) for i in range(max(n_layer, 1)) for kv in ("key", "value")}
    missing += [f"past_key_values.{i}.{kv}" for i, kv in sorted(want - past.keys())]
    missing += [f"present.{i}.{kv}" for i, kv in sorted(want - present.keys())]
    if missing:
        raise InputError(f"{path} is not a decoder with KV-cache inputs: missing {', '.join(missing[:6])}"
                         + (" ..." if len(missing) > 6 else ""))
    unknown = sorted(set(inputs) - _FEEDABLE - set(past.values()))
    if unknown:
        raise InputError(f"{path} has inputs edgebench cannot feed: {', '.join(unknown)}")
    shape = value_shape(inputs[past[0, "key"]])
    if len(shape) != 4 or not shape[1] or not shape[3]:
        raise InputError(f"{path}: cannot read n_head_kv / head_dim from past_key_values.0.key shape {shape}")
    n_kv, head_dim = shape[1], shape[3]
    kv_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(
        inputs[past[0, "key"]].type.tensor_type.elem_type))
    past_names = [past[i, kv] for i in range(n_layer) for kv in ("key", "value")]
    out_names = ["logits"] + [present[i, kv] for i in range(n_layer) for kv in ("key", "value")]
    has_pos = "position_ids" in inputs
    has_branch = "use_cache_branch" in inputs
    logits = value_shape(outputs["logits"])
    vocab = (logits[-1] or 0) if logits else 0
    logits_itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(
        outputs["logits"].type.tensor_type.elem_type)).itemsize
    embd = _embedding_width(graph)
    heads = [a.i for n in graph.node if n.op_type in ("GroupQueryAttention", "MultiHeadAttention")
             for a in n.attribute if a.name == "num_heads"]
    gqa_heads = heads[0] if heads else 0
    # GroupQueryAttention writes into its past buffer when present is the same buffer (how
    # onnxruntime-genai runs it): a cache preallocated for n_ctx, bound once, no per-step copy.
    gqa_out = {o for n in graph.node if n.op_type == "GroupQueryAttention" for o in n.output[1:3]}
    kv_shared = set(present.values()) <= gqa_out
    has_keep = any(vi.name == LOGITS_TO_KEEP for vi in graph.input)
    return GraphLayout(
        has_keep=has_keep, n_layer=n_layer, n_kv=n_kv, head_dim=head_dim, kv_dtype=kv_dtype, past_names=past_names,
        out_names=out_names, has_pos=has_pos, has_branch=has_branch, vocab=vocab,
        logits_itemsize=logits_itemsize, embd=embd, gqa_heads=gqa_heads, kv_shared=kv_shared)
