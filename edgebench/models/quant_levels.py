"""The quant levels edgebench builds synthetic models at: one list per model format, one check each.

Backends name their family (Backend.quants); the writers (synth_gguf, synth_onnx) check with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgebench.errors import InputError


@dataclass(frozen=True)
class QuantLevels:
    """The levels of one model format, canonically spelled, and the ladder a preset runs at when
    the user names no level."""

    what: str  # how an error message names a level: "quant level", "onnx quant level"
    levels: tuple[str, ...]
    ladder: tuple[str, ...]

    def __post_init__(self) -> None:
        if not set(self.ladder) <= set(self.levels):
            raise ValueError(f"ladder {self.ladder} has levels outside {self.levels}")

    def canonical(self, quant: str) -> str | None:
        """The canonical spelling of ``quant`` (case and surrounding blanks ignored), else None."""
        return {lv.lower(): lv for lv in self.levels}.get(quant.strip().lower())

    def check(self, quant: str) -> str:
        """The canonical spelling of ``quant``, else InputError listing the valid levels."""
        canon = self.canonical(quant)
        if canon is None:
            raise InputError(f"unknown {self.what} {quant!r}; valid: {', '.join(self.levels)}")
        return canon


# Levels llama.cpp makes without an importance matrix (llama-quant.cpp tensor_requires_imatrix:
# IQ1_*, IQ2_*, IQ3_XXS, and so IQ3_XS, and Q2_K_S need one). Names are llama_ftype names minus
# LLAMA_FTYPE_MOSTLY_ (LLAMA_FTYPE_ALL_F32 for F32).
# Lu et al. 2024 measured FP16, Q8_0, Q6_K, Q5_K, Q4_K_M, Q3_K; Q2_K shows the floor.
GGUF_QUANTS = QuantLevels(
    "quant level",
    levels=("F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S",
            "Q4_1", "Q4_0", "IQ4_NL", "IQ4_XS", "Q3_K_L", "Q3_K_M", "Q3_K_S", "IQ3_M", "IQ3_S", "Q2_K"),
    ladder=("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"),
)

# onnxruntime's own quantizer, MatMulNBitsQuantizer (models.onnx_quant has each level's recipe): int8 =
# every MatMul int8 in blocks of 32 (llama.cpp's Q8_0); int4-b32 / int4-b128 = the layers int4 in blocks
# of 32 / 128, the lm_head (= a tied embedding) 8-bit as in int8 (llama.cpp keeps it at Q6_K);
# fp16 / int4-b32-fp16: float16 activations, KV cache and logits (models.onnx_fp16), for the CUDA provider.
ONNX_FP16_LEVELS = ("fp16", "int4-b32-fp16")
ONNX_QUANTS = QuantLevels(
    "onnx quant level",
    levels=("fp32", "int8", "int4-b32", "int4-b128", *ONNX_FP16_LEVELS),
    ladder=("fp32", "int8", "int4-b32"),
)

# The build recipe of each ONNX level: bump a level's number whenever how it is built changes, and
# a cached build stamped with another number (or, for a number above 1, with none) is rebuilt, not
# reused (models.onnx_recipe). 2: int8 from quantize_dynamic (per-tensor) to blockwise MatMulNBits,
# int4-b32 / int4-b128 with the lm_head at 8 bits.
ONNX_RECIPES = {"fp32": 1, "fp16": 1, "int8": 2, "int4-b32": 2, "int4-b128": 2, "int4-b32-fp16": 1}
