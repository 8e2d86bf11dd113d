"""Op shares computed on read from one case's raw samples (pure pandas; no backend imports).

Stored by the ops profiler (edgebench.profilers.ops), per profiled rep and phase:
  op_ns          label "OP|op_class": summed traced time of that op's nodes (raw, ns)
  op_typical_ns  label "OP|op_class": the same with rare stalls removed (each node counted at the
                 median time of its name over the phase's repeats)
  op_count       label "OP|op_class": number of nodes
  node_ns   label node name: summed raw time of the top nodes
  op_launch_ns  traced time of a node that does nothing, measured right after each phase window
  op_launch1_ns the same for a node ggml computes on one thread (records.GGML_ONE_TASK_OPS)
  profiled_ns (label "ops"): wall time of each profiled phase
and by the worker's plain reps: prefill_ns, decode_step_ns.

Raw shares divide each op's traced time (op_ns) by the phase's traced total. Tracing makes every
node its own launch, so small ops carry a fixed cost they do not pay in an untraced run, and
every launch may wait for a sleeping worker thread; the corrected time of an op is
``max(0, typical - count * launch)`` with ``typical`` its op_typical_ns (op_ns when absent) and
``launch`` the median of the phase's probes for the op's thread count: op_launch1_ns for a one-task
op (a traced node is its own graph, which ggml plans with that node's task count: no fork/join),
op_launch_ns for the rest (0 when absent: an ONNX Runtime case has no probe and is never
corrected). What the max() takes off is kept as clipped time (per op, and per phase in % of the
typical total) so an over-correction shows. Corrected shares divide by the corrected total. Both
sum to 1 per phase.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from edgebench.records import GGML_ONE_TASK_OPS, KEY_FIELDS, OP_CLASSES

OPS_CSV_COLUMNS: tuple[str, ...] = (
    ("run_id", "case_id") + KEY_FIELDS
    + ("phase", "op_class", "op", "count", "time_ms", "time_ms_corrected", "time_ms_clipped", "share", "share_corrected")
)
_CLASS_ORDER = {c: i for i, c in enumerate(OP_CLASSES)}


def has_launch_probe(samples_df: pd.DataFrame) -> bool:
    """Whether the correction applies at all (llama.cpp's tracer stores probes; ONNX Runtime's none)."""
    return bool((samples_df["metric"] == "op_launch_ns").any())


def launch_ns(samples_df: pd.DataFrame, phase: str | None = None, metric: str = "op_launch_ns") -> float:
    """Per-node launch cost (ns): median of the phase's ``metric`` probes (of all probes when the
    phase has none, or phase is None); 0 when none was stored."""
    v = samples_df[samples_df["metric"] == metric]
    if phase is not None and (v["phase"] == phase).any():
        v = v[v["phase"] == phase]
    return float(v["value"].median()) if len(v) else 0.0


def _per_rep(samples_df: pd.DataFrame) -> pd.DataFrame:
    """One row per (phase, rep, op, op_class): time_ns, count, corrected_ns, clipped_ns."""
    s = samples_df[samples_df["metric"].isin(("op_ns", "op_count", "op_typical_ns"))]
    cols = ["phase", "rep", "op", "op_class", "time_ns", "count", "corrected_ns", "clipped_ns"]
    if s.empty or not (s["metric"] == "op_ns").any():
        return pd.DataFrame(columns=cols)
    wide = s.pivot_table(index=["phase", "rep", "label"], columns="metric", values="value",
                         aggfunc="sum").reset_index()
    for m in ("op_ns", "op_count", "op_typical_ns"):
        if m not in wide:
            wide[m] = float("nan")
    wide[["op_ns", "op_count"]] = wide[["op_ns", "op_count"]].fillna(0.0)
    typical = wide["op_typical_ns"].fillna(wide["op_ns"])
    parts = wide["label"].str.rsplit("|", n=1)
    wide["op"] = parts.str[0]
    wide["op_class"] = parts.apply(lambda p: p[1] if len(p) > 1 else "other")
    wide = wide.rename(columns={"op_ns": "time_ns", "op_count": "count"})
    phases = wide["phase"].unique()
    multi = wide["phase"].map({ph: launch_ns(samples_df, ph) for ph in phases})
    # runs stored before the one-thread probe existed: every node at the all-threads cost, as then
    one = wide["phase"].map({ph: launch_ns(samples_df, ph, "op_launch1_ns") or launch_ns(samples_df, ph) for ph in phases})
    launch = one.where(wide["op"].isin(GGML_ONE_TASK_OPS), multi)
    net = typical - wide["count"] * launch
    wide["corrected_ns"] = net.clip(lower=0.0)
    wide["clipped_ns"] = (-net).clip(lower=0.0)
    return wide[cols]


def _sort_key(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(_o=df["op_class"].map(_CLASS_ORDER).fillna(len(_CLASS_ORDER))) \
             .sort_values(["phase", "_o", "time_ns"], ascending=[True, True, False]).drop(columns="_o")


def op_rows(samples_df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per (phase, op_class, op): count and time_ms per rep (means over the profiled reps), raw and
    corrected; share and share_corrected of the phase's traced time (each sums to 1 per phase)."""
    r = _per_rep(samples_df)
    if r.empty:
        return []
    n_reps = r.groupby("phase")["rep"].nunique()
    g = r.groupby(["phase", "op_class", "op"], as_index=False)[["time_ns", "count", "corrected_ns", "clipped_ns"]].sum()
    g = _sort_key(g)
    tot = g.groupby("phase")[["time_ns", "corrected_ns"]].transform("sum")
    out = []
    for row, t_raw, t_cor in zip(g.itertuples(index=False), tot["time_ns"], tot["corrected_ns"]):
        n = n_reps[row.phase]
        out.append({
            "phase": row.phase, "op_class": row.op_class, "op": row.op,
            "count": float(row.count / n), "time_ms": float(row.time_ns / n / 1e6),
            "time_ms_corrected": float(row.corrected_ns / n / 1e6),
            "time_ms_clipped": float(row.clipped_ns / n / 1e6),
            "share": float(row.time_ns / t_raw) if t_raw else 0.0,
            "share_corrected": float(row.corrected_ns / t_cor) if t_cor else 0.0,
        })
    return out


def class_shares(samples_df: pd.DataFrame, corrected: bool = True) -> dict[str, dict[str, float]]:
    """{phase: {op_class: share}} over all profiled reps; classes in OP_CLASSES order, only those
    seen; the shares of a phase sum to 1."""
    r = _per_rep(samples_df)
    col = "corrected_ns" if corrected else "time_ns"
    out: dict[str, dict[str, float]] = {}
    for phase, g in r.groupby("phase"):
        by = g.groupby("op_class")[col].sum()
        total = float(by.sum())
        if total <= 0:
            continue
        order = sorted(by.index, key=lambda c: _CLASS_ORDER.get(c, len(_CLASS_ORDER)))
        out[str(phase)] = {c: float(by[c]) / total for c in order}
    return out


def _plain_ns(samples_df: pd.DataFrame) -> dict[str, float]:
    """Mean untraced time per rep of each phase, from the worker's plain timing reps."""
    plain = samples_df[samples_df["rep"] >= 0]
    pre = plain.loc[plain["metric"] == "prefill_ns", "value"]
    dec = plain[plain["metric"] == "decode_step_ns"].groupby("rep")["value"].sum()
    return {"prefill": float(pre.mean()) if len(pre) else 0.0, "decode": float(dec.mean()) if len(dec) else 0.0}


def _profiled_ns(samples_df: pd.DataFrame) -> dict[str, float]:
    p = samples_df[(samples_df["metric"] == "profiled_ns") & (samples_df["label"] == "ops")]
    return {ph: float(g.groupby("rep")["value"].sum().mean()) for ph, g in p.groupby("phase")}


def overhead_pct(profiled: float, plain: float) -> float | None:
    """Profiled / plain time - 1, in %; None when either is unknown."""
    return (profiled / plain - 1.0) * 100.0 if profiled and plain else None


def ops_summary(samples_df: pd.DataFrame) -> dict[str, Any]:
    """Per-case op figures: corrected (and raw) mul_mat_vec share of decode and mul_mat share of
    prefill; the profiling overhead (profiled / plain wall time - 1, in %: both phases together and
    each alone); the launch cost used by the correction; and the coverage of each phase, corrected
    op time / plain wall time in % (near 100 when the correction is right: the rest of a plain
    step is graph building, input and output copies)."""
    cor, raw = class_shares(samples_df, True), class_shares(samples_df, False)
    plain, prof = _plain_ns(samples_df), _profiled_ns(samples_df)
    both = [p for p in ("prefill", "decode") if prof.get(p) and plain.get(p)]
    r = _per_rep(samples_df)
    corrected = r.groupby(["phase", "rep"])["corrected_ns"].sum().groupby("phase").mean().to_dict() if len(r) else {}
    by_phase = r.groupby("phase")[["time_ns", "clipped_ns"]].sum() if len(r) else None

    def clipped(phase: str) -> float | None:  # % of the phase's traced time the correction clipped
        if by_phase is None or phase not in by_phase.index or not has_launch_probe(samples_df):
            return None
        t = float(by_phase.loc[phase, "time_ns"])
        return float(by_phase.loc[phase, "clipped_ns"]) / t * 100.0 if t else None

    def coverage(phase: str) -> float | None:
        c, p = corrected.get(phase), plain.get(phase)
        return float(c / p * 100.0) if c and p else None

    return {
        "mul_mat_vec_share_decode": cor.get("decode", {}).get("mul_mat_vec"),
        "mul_mat_share_prefill": cor.get("prefill", {}).get("mul_mat"),
        "ops_overhead_pct": overhead_pct(sum(prof[p] for p in both), sum(plain[p] for p in both)) if both else None,
        "mul_mat_vec_share_decode_raw": raw.get("decode", {}).get("mul_mat_vec"),
        "mul_mat_share_prefill_raw": raw.get("prefill", {}).get("mul_mat"),
        "ops_overhead_pct_prefill": overhead_pct(prof.get("prefill", 0.0), plain["prefill"]),
        "ops_overhead_pct_decode": overhead_pct(prof.get("decode", 0.0), plain["decode"]),
        "op_launch_ns_prefill": launch_ns(samples_df, "prefill") or None,
        "op_launch_ns_decode": launch_ns(samples_df, "decode") or None,
        "op_launch1_ns_prefill": launch_ns(samples_df, "prefill", "op_launch1_ns") or None,
        "op_launch1_ns_decode": launch_ns(samples_df, "decode", "op_launch1_ns") or None,
        "ops_clipped_pct_prefill": clipped("prefill"),
        "ops_clipped_pct_decode": clipped("decode"),
        "ops_coverage_pct_prefill": coverage("prefill"),
        "ops_coverage_pct_decode": coverage("decode"),
    }


def top_nodes(samples_df: pd.DataFrame, phase: str, n: int = 30) -> list[dict[str, Any]]:
    """The ``n`` slowest named nodes of a phase: name, time_ms per rep (raw), share of the phase's
    traced time."""
    s = samples_df[(samples_df["metric"] == "node_ns") & (samples_df["phase"] == phase)]
    if s.empty:
        return []
    reps = max(1, s["rep"].nunique())
    total = float(samples_df[(samples_df["metric"] == "op_ns") & (samples_df["phase"] == phase)]["value"].sum())
    by = s.groupby("label")["value"].sum().sort_values(ascending=False).head(n)
    return [{"name": k, "time_ms": v / reps / 1e6, "share": v / total if total else None} for k, v in by.items()]


def ops_csv_rows(case_summary_row: dict[str, Any], samples_df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of ops.csv for one case: the case's run_id, case_id and key columns (KEY_FIELDS, quant
    among them) joined to op_rows(); columns in OPS_CSV_COLUMNS order."""
    keys = {k: case_summary_row.get(k) for k in ("run_id", "case_id") + KEY_FIELDS}
    return [{c: (keys | r).get(c) for c in OPS_CSV_COLUMNS} for r in op_rows(samples_df)]
