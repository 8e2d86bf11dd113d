"""How each ONNX level is quantized from the fp32 decoder: onnxruntime's own quantizers, one recipe per level.

- ``int8``: every MatMul weight (lm_head included) int8, symmetric, one fp32 scale per block of 32
  along K: com.microsoft ``MatMulNBits`` bits=8 with accuracy_level 4 (activations quantized to int8
  per block inside the kernel). That is llama.cpp's Q8_0 (int8 blocks of 32, activations as q8_0 in
  the dot product) in ONNX Runtime's own operator.
- ``int4-b32`` / ``int4-b128``: the layers' MatMul weights int4, symmetric, blocks of 32 / 128
  (``MatMulNBits`` bits=4, accuracy_level 4, as onnxruntime-genai's builder does for CPU); the
  lm_head (which a tied model's embedding reads, models.onnx_tied) at 8 bits, blocks of 32, as the
  int8 level. llama.cpp does the same: its low-bit ftypes keep ``output.weight`` (and a tied
  ``token_embd``) at Q6_K, or Q8_0 (src/llama-quant.cpp, llama_tensor_get_type: "for arches that
  share the same tensor between the token embeddings and the output, we quantize the token
  embeddings with the quantization of the output tensor"); ONNX Runtime has no 6-bit, 8 is next.
- ``int4-b32-fp16``: fp16 activations (models.onnx_fp16), then every MatMul int4 with fp16 scales,
  lm_head included (its recipe is unchanged: an 8-bit lm_head on the CUDA provider is untested).

Why not ``quantize_dynamic`` for int8 (the recipe before ONNX_RECIPES 2): its MatMulInteger quantizes
each activation tensor to uint8 with ONE scale over all tokens and channels, and each weight with
one scale per tensor. Measured on SmolLM2-135M (benchmarks/README.md, "ONNX quantization
recipes"): mean KL vs fp32 0.55 (per-channel weights 0.42, the lm_head kept fp32 0.49, the
weights' per-tensor rounding alone 0.096), against 0.005 for the blockwise recipe and 0.0046 for
llama.cpp's Q8_0 vs F16: the per-tensor activation quantization was the loss.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from edgebench.models import synth_onnx

ACCURACY_LEVEL = 4  # MatMulNBits: int8 compute (activations quantized per block), genai's builder for CPU
INT8_BLOCK = 32  # Q8_0's block
LM_HEAD = "/lm_head/MatMul"  # models.synth_onnx names the logits matmul so


def quantize(src: Path, dst: Path, quant: str) -> None:
    """Quantize the fp32 model ``src`` into ``dst`` at ``quant`` (module docstring); the metadata
    says the level (edgebench.quant) and the recipe (models.onnx_recipe). Blocks."""
    with _quiet():
        _quantize_loud(src, dst, quant)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The quantizers log every node at INFO and advise pre-processing at WARNING.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _nbits(model, bits: int, block: int, exclude: tuple[str, ...] = ()):
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=True, accuracy_level=ACCURACY_LEVEL,
                             nodes_to_exclude=list(exclude), op_types_to_quantize=("MatMul",))
    q.process()
    return q.model.model


def _quantize_loud(src: Path, dst: Path, quant: str) -> None:
    import onnx

    from edgebench.models.onnx_recipe import stamp
    from edgebench.models.onnx_tied import share_tied_embedding

    model = onnx.load_model(str(src))
    if quant == "int8":
        model = _nbits(model, 8, INT8_BLOCK)
    elif quant == "int4-b32-fp16":  # fp16 activations (models.onnx_fp16), then int4 weights with fp16 scales
        from edgebench.models.onnx_fp16 import to_fp16

        model = _nbits(to_fp16(model), 4, 32)
    elif quant.startswith("int4"):
        block = int(quant.split("-b")[1])  # int4-b32, int4-b128
        model = _nbits(model, 4, block, exclude=(LM_HEAD,))
        model = _nbits(model, 8, INT8_BLOCK)  # what is left unquantized: the lm_head
    elif quant == "fp16":
        from edgebench.models.onnx_fp16 import to_fp16

        model = to_fp16(model)
    else:
        raise ValueError(f"no recipe for onnx level {quant!r}")
    if sum(len(t.raw_data) for t in model.graph.initializer) > synth_onnx.EXTERNAL_DATA_ABOVE:
        onnx.external_data_helper.convert_model_to_external_data(
            model, all_tensors_to_one_file=True, location=dst.name + ".data")
    stamp(model, quant)
    share_tied_embedding(model)  # the quantized lm_head becomes the embedding too
    onnx.save_model(model, str(dst))
