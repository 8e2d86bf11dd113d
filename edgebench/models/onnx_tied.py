"""A tied embedding stored once in an ONNX decoder: the embedding Gather reads the lm_head's weight.

llama.cpp keeps one ``token_embd`` tensor for a tied model and uses it for the output too; an ONNX
export (and onnxruntime's quantizers, which only touch MatMul weights) keeps an fp32 [n_vocab, n_embd]
embedding *and* the [n_embd, n_vocab] lm_head, so the file holds the matrix twice, once unquantized.
share_tied_embedding rewrites the embedding lookup to read whatever the lm_head MatMul holds:

- fp32 ``MatMul(h, W[n_embd, n_vocab])``: ``Transpose(Gather(W, ids, axis=1))`` (a column per token);
- int8 / int4 (``MatMulNBits`` bits 8 or 4, symmetric: B uint8 [n_vocab, n_blocks, block * bits / 8],
  scales [n_vocab, n_blocks]; models.onnx_quant): com.microsoft ``GatherBlockQuantized`` on B itself
  (as onnxruntime-genai's builder shares a tied embedding), the scales reshaped to the rank it
  requires, then [batch, seq, n_embd]. Both ops take the same implicit zero point, 2^(bits-1), when
  none is given.

The embedding then carries the lm_head's quantization error, as a tied llama.cpp model's does (its
token_embd is quantized with the level). The separate embedding initializer is removed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

EMBED = "model.embed_tokens.weight"
SHARED_KEY = "edgebench.tied_shared"  # metadata_props: "1" when the embedding reads the lm_head's weight
_PREFIX = "/model/embed_tokens/tied"


def _producer_of(graph: onnx.GraphProto, name: str) -> onnx.NodeProto | None:
    return next((n for n in graph.node if name in n.output), None)


def _lm_head(graph: onnx.GraphProto) -> tuple[str, list[str], dict]:
    """(kind, weight inputs, attributes) of the matmul producing the logits."""
    node = _producer_of(graph, "logits")
    if node is None:
        raise ValueError("no lm_head matmul produces 'logits'")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "MatMul":
        return "fp32", [node.input[1]], attrs
    if node.op_type == "MatMulNBits":
        if len(node.input) > 3 and node.input[3]:
            raise ValueError("lm_head MatMulNBits has zero points: no shared embedding for it")
        return "nbits", [node.input[1], node.input[2]], attrs
    raise ValueError(f"lm_head is a {node.op_type}: no shared embedding for it")


def share_tied_embedding(model: onnx.ModelProto) -> bool:
    """Rewrite ``model`` in place so its embedding reads the lm_head's weight (module docstring).
    False (nothing changed) for a model whose metadata does not say edgebench.tied = 1, or with
    no embedding Gather on input_ids."""
    meta = {e.key: e for e in model.metadata_props}
    if meta.get("edgebench.tied") is None or meta["edgebench.tied"].value != "1":
        return False
    graph = model.graph
    gather = next((n for n in graph.node if n.op_type == "Gather" and n.input[1] == "input_ids"), None)
    if gather is None:
        return False
    follow = next((n for n in graph.node if n.name == f"{_PREFIX}/Transpose"), None)
    old = [gather] + ([follow] if follow is not None else [])
    out = old[-1].output[0]
    kind, w, attrs = _lm_head(graph)
    nodes: list[onnx.NodeProto] = []
    if kind == "fp32":
        cols = f"{_PREFIX}/Gather/output_0"
        nodes.append(helper.make_node("Gather", [w[0], "input_ids"], [cols], name=f"{_PREFIX}/Gather", axis=1))
        nodes.append(helper.make_node("Transpose", [cols], [out], name=f"{_PREFIX}/Transpose", perm=[1, 2, 0]))
    else:
        n_vocab, block = int(attrs["N"]), int(attrs["block_size"])
        n_blocks = -(-int(attrs["K"]) // block)
        shape = numpy_helper.from_array(np.array([n_vocab, n_blocks, 1], np.int64), f"{_PREFIX}/scales_shape")
        flat = numpy_helper.from_array(np.array([0, 0, -1], np.int64), f"{_PREFIX}/out_shape")
        graph.initializer.extend([shape, flat])
        nodes.append(helper.make_node("Reshape", [w[1], shape.name], [f"{_PREFIX}/scales"], name=f"{_PREFIX}/Scales"))
        nodes.append(helper.make_node(
            "GatherBlockQuantized", [w[0], "input_ids", f"{_PREFIX}/scales"], [f"{_PREFIX}/blocks"],
            name=f"{_PREFIX}/GatherBlockQuantized", domain="com.microsoft", gather_axis=0, quantize_axis=2,
            block_size=block, bits=int(attrs.get("bits", 4))))
        nodes.append(helper.make_node("Reshape", [f"{_PREFIX}/blocks", flat.name], [out], name=f"{_PREFIX}/Reshape"))
    at = list(graph.node).index(old[0])
    for n in old:
        graph.node.remove(n)
    for k, n in enumerate(nodes):
        graph.node.insert(at + k, n)
    retyped = {o for n in old + nodes for o in n.output} - {out}  # shape inference typed them as before
    for vi in [vi for vi in graph.value_info if vi.name in retyped]:
        graph.value_info.remove(vi)
    used = {i for n in graph.node for i in n.input} | {vi.name for vi in graph.input}
    for t in [t for t in graph.initializer if t.name not in used]:  # the embedding, an orphaned fp32 lm_head
        graph.initializer.remove(t)
    entry = meta.get(SHARED_KEY) or model.metadata_props.add()
    entry.key, entry.value = SHARED_KEY, "1"
    return True
