"""The side-by-side op-class table and figure (present.ops_side) on summary rows of two runtimes."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from edgebench.present import ops_side


def _rows() -> pd.DataFrame:
    shares = {"prefill": {"mul_mat": 0.8, "attention": 0.2}, "decode": {"mul_mat_vec": 0.9, "norm": 0.1}}
    return pd.DataFrame([
        {"backend": "llama-cpp", "quant": "Q4_K_M", "model": "m", "status": "ok", "op_shares": shares,
         "prefill_tok_s": 200.0, "decode_tok_s": 50.0},
        {"backend": "onnxruntime", "quant": "int4-b32", "model": "m", "status": "ok",
         "op_shares": {"prefill": {"mul_mat": 0.5, "attention": 0.5}, "decode": {"mul_mat_vec": 1.0}},
         "prefill_tok_s": 100.0, "decode_tok_s": float("nan")},  # no decode in this case
        {"backend": "onnxruntime", "quant": "fp32", "model": "m", "status": "failed", "op_shares": {},
         "prefill_tok_s": None, "decode_tok_s": None},
    ])


def test_ms_per_token_splits_the_plain_time_per_token():
    data = ops_side.ms_per_token(_rows())
    assert list(data) == ["llama-cpp Q4_K_M", "onnxruntime int4-b32"]  # the failed case has no ops
    llama = data["llama-cpp Q4_K_M"]
    assert llama[("prefill", "mul_mat")] == pytest.approx(0.8 * 1000 / 200)
    assert sum(v for (ph, _), v in llama.items() if ph == "decode") == pytest.approx(1000 / 50)
    assert not any(ph == "decode" for ph, _ in data["onnxruntime int4-b32"])  # NaN speed: no phase


def test_table_and_figure(tmp_path):
    df = _rows()
    assert ops_side.applies(df) and not ops_side.applies(df[df["backend"] == "llama-cpp"])
    rows, cols = ops_side.table(df)
    assert [c for c, _, _ in cols] == ["phase", "op_class", "llama-cpp Q4_K_M", "onnxruntime int4-b32"]
    first = rows.iloc[0]
    assert (first["phase"], first["op_class"]) == ("prefill", "mul_mat")
    assert first["llama-cpp Q4_K_M"] == "4.000 (80%)" and first["onnxruntime int4-b32"] == "5.000 (50%)"
    norm = rows[(rows["phase"] == "decode") & (rows["op_class"] == "norm")].iloc[0]
    assert norm["onnxruntime int4-b32"] == "-" and math.isclose(float(norm["llama-cpp Q4_K_M"].split()[0]), 2.0)
    path = ops_side.figure(df, tmp_path / "figures")
    assert path.name == "ops_side.png" and path.stat().st_size > 1000
