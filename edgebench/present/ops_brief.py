"""The op-class breakdown `edgebench run --profile ops` prints at the end of the run: per case and
phase, the largest op classes' shares of the traced op time (analysis.ops.class_shares), labelled
launch-corrected only where the backend has a launch probe (llama.cpp), raw otherwise (ONNX Runtime).
The report's figures hold the full picture; this is the line a person reads in the terminal."""

from __future__ import annotations

from typing import Any

TOP = 4  # classes shown per phase; the rest are summed as "other"


def phase_text(shares: dict[str, float], top: int = TOP) -> str:
    """'mul_mat 71%, flash_attn 9%, norm 6%, copy 5%, other 9%' (largest first)."""
    ranked = sorted(shares.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{c} {v:.0%}" for c, v in ranked[:top])
    rest = sum(v for _, v in ranked[top:])
    return shown + (f", other {rest:.0%}" if rest > 0.005 else "")


def ops_lines(store, run_id: str, rows: list[dict[str, Any]]) -> list[str]:
    """One line per ok case that the ops profiler traced (plain text; the caller escapes it)."""
    from edgebench.analysis.ops import class_shares, has_launch_probe
    from edgebench.records import case_label

    keys = ("ops_overhead_pct", "mul_mat_vec_share_decode", "mul_mat_share_prefill")
    traced = [r for r in rows if r.get("status") == "ok" and any(r.get(k) is not None for k in keys)]
    out = []
    for r in traced:
        s = store.get_samples(run_id, int(r["case_id"]))
        shares = class_shares(s, corrected=True)
        if not shares:
            continue
        kind = "launch-corrected" if has_launch_probe(s) else "raw"
        label = case_label(r, {"backend", "quant", "n_threads"})
        phases = "; ".join(f"{p}: {phase_text(v)}" for p, v in shares.items())
        out.append(f"ops, case {r['case_id']} {label} ({kind} shares of op time): {phases}")
    return out
