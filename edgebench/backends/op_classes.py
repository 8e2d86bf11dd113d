"""Op classes of each runtime's nodes: one taxonomy (records.OP_CLASSES) for every backend, so op
shares compare across runtimes. mul_mat_vec is a matrix multiply whose activation has one column
(decode); mul_mat has more (prefill).
"""

from __future__ import annotations

# ggml op names as ggml_op_desc() returns them (never enum numbers: they change between versions).
_GGML: dict[str, str] = {
    "FLASH_ATTN_EXT": "attention", "SOFT_MAX": "attention",
    "RMS_NORM": "norm", "NORM": "norm", "GROUP_NORM": "norm", "L2_NORM": "norm",
    "ROPE": "rope",
    "SILU": "activation", "GELU": "activation", "GELU_QUICK": "activation", "RELU": "activation",
    "SWIGLU": "activation", "GEGLU": "activation", "GLU": "activation", "UNARY": "activation",
    "TANH": "activation", "SIGMOID": "activation", "GELU_ERF": "activation",
    "ADD": "elementwise", "ADD1": "elementwise", "MUL": "elementwise", "SUB": "elementwise",
    "DIV": "elementwise", "SCALE": "elementwise", "SQR": "elementwise", "SQRT": "elementwise",
    "ADD_ID": "elementwise", "SOFTCAP": "elementwise",
    "CPY": "copy", "DUP": "copy", "SET_ROWS": "copy", "GET_ROWS": "copy", "CONT": "copy",
    "CONCAT": "copy", "SET": "copy",
}

# ONNX Runtime op types (standard and com.microsoft contrib ops).
_ONNX: dict[str, str] = {
    "GroupQueryAttention": "attention", "MultiHeadAttention": "attention", "Attention": "attention",
    "Softmax": "attention",
    "SimplifiedLayerNormalization": "norm", "SkipSimplifiedLayerNormalization": "norm",
    "LayerNormalization": "norm", "SkipLayerNormalization": "norm", "RMSNormalization": "norm",
    "RotaryEmbedding": "rope",
    "Sigmoid": "activation", "Silu": "activation", "Gelu": "activation", "FastGelu": "activation",
    "QuickGelu": "activation", "Relu": "activation", "Tanh": "activation",
    "Add": "elementwise", "Mul": "elementwise", "Sub": "elementwise", "Div": "elementwise",
    "Pow": "elementwise", "Sqrt": "elementwise", "ReduceMean": "elementwise", "Neg": "elementwise",
    "Cos": "elementwise", "Sin": "elementwise",
    "Gather": "copy", "Concat": "copy", "Reshape": "copy", "Transpose": "copy", "Slice": "copy",
    "Cast": "copy", "Expand": "copy", "Unsqueeze": "copy", "Squeeze": "copy", "Split": "copy",
    "Identity": "copy", "GatherElements": "copy", "ScatterND": "copy",
}
_ONNX_MATMUL = {"MatMul", "MatMulNBits", "MatMulInteger", "DynamicQuantizeMatMul", "Gemm",
                "MatMulIntegerToFloat", "FusedMatMul", "QLinearMatMul"}


def classify_ggml(op: str, activation_cols: int = 0) -> str:
    """Class of a ggml node. ``activation_cols`` is ne[1] of the MUL_MAT's second operand."""
    if op in ("MUL_MAT", "MUL_MAT_ID", "OUT_PROD"):
        return "mul_mat_vec" if activation_cols == 1 else "mul_mat"
    return _GGML.get(op, "other")


def classify_onnx(op_type: str, activation_rows: int = 0) -> str:
    """Class of an ONNX Runtime node. ``activation_rows`` is the number of tokens (rows) of the
    matmul's activation input (1 in decode)."""
    if op_type in _ONNX_MATMUL:
        return "mul_mat_vec" if activation_rows == 1 else "mul_mat"
    return _ONNX.get(op_type, "other")
