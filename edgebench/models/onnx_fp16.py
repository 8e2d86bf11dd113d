"""fp16 activations for the CUDA execution provider: an fp32 decoder graph converted to float16.

onnxruntime's own converter (onnxruntime.transformers.float16) turns weights, activations, the
KV cache and the logits into float16, except the rotary cos/sin cache (positions x inverse
frequencies), computed in float32 and cast: in float16 a position near 2048 has a step of 1-2, so
the angles would be off by radians.

RMSNorm stays the standard-op pattern: onnxruntime fuses it into SimplifiedLayerNormalization at
session start (graph_opt basic and above; checked on 1.32: 2 per layer + 1 in the optimized
graph), which accumulates in float32 for float16 inputs. With ``graph_opt = disable`` a hidden
state over 256 would overflow float16 in its x^2 (onnx.checker does not know the fused op, so
the file keeps standard ops).

The levels (models.quant_levels.ONNX_FP16_LEVELS) are meant for CUDA; they also run on the CPU
provider (its fp16 kernels for GroupQueryAttention, RotaryEmbedding and MatMulNBits), slowly,
which is how their graphs are checked without a GPU.
"""

from __future__ import annotations

import onnx
from onnx import helper

# Kept float32: the cos/sin cache nodes and the inverse frequencies they read.
_ROTARY = "/model/rotary/"
_FP32_PREFIXES = (_ROTARY, "/model/constants/inv_freq")


def fp32_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes kept in float32 (module docstring)."""
    return [n.name for n in graph.node if n.name.startswith(_FP32_PREFIXES)
]


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (fp32) with float16 weights, activations, KV cache inputs/outputs and logits."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    graph = model.graph
    for op in ("Cos", "Sin"):  # the converter casts into blocked nodes, not out of them: cast here
        node = next(n for n in graph.node if n.name == f"{_ROTARY}{op}")
        cache, half = node.output[0], f"{_ROTARY}{op}_fp16/output_0"
        for n in graph.node:
            n.input[:] = [half if i == cache else i for i in n.input]
        graph.node.insert(list(graph.node).index(node) + 1, helper.make_node(
            "Cast", [cache], [half], name=f"{_ROTARY}{op}_fp16", to=onnx.TensorProto.FLOAT16))
    # shape inference cannot type what follows the com.microsoft nodes: the converter's own pass
    return convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=True,
                                    node_block_list=fp32_nodes(model.graph))
