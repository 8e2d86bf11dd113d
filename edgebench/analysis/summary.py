"""Per-case summaries computed on read from the raw samples (nothing derived is stored)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.records import MODEL_INFO_FIELDS, SUMMARY_COLUMNS
from edgebench.store import bundle

CV_WARN = 0.10  # DESIGN.md: warn when the coefficient of variation is above 10%


def _mean_std(xs: np.ndarray) -> tuple[float | None, float | None]:
    if xs.size == 0:
        return None, None
    return float(xs.mean()), float(xs.std(ddof=1)) if xs.size > 1 else 0.0


def _cv(mean: float | None, std: float | None) -> float | None:
    return std / mean if mean and std is not None else None


def timing_summary(s, n_prompt: int, n_gen: int) -> dict[str, Any]:
    """Throughput and latency from one case's samples (a DataFrame of Sample rows).

    prefill_tok_s is n_prompt / prefill time per rep (mean, std over reps); ttft_ms the median
    prefill time; decode_tok_s is n_gen / sum of that rep's step times (mean, std over reps);
    tpot percentiles over every measured step of every rep.
    """
    out: dict[str, Any] = {}
    plain = s[s["rep"] >= 0]
    pre = plain[(plain["metric"] == "prefill_ns")].sort_values("rep")["value"].to_numpy(dtype=float)
    steps = plain[plain["metric"] == "decode_step_ns"]
    load = s[s["metric"] == "load_ns"]["value"].to_numpy(dtype=float)
    out["load_ms"] = float(load.mean() / 1e6) if load.size else None
    pre_tok_s = n_prompt / (pre / 1e9) if pre.size else np.array([])
    out["prefill_tok_s"], out["prefill_tok_s_std"] = _mean_std(pre_tok_s)
    out["ttft_ms"] = float(np.median(pre) / 1e6) if pre.size else None
    per_rep = steps.groupby("rep")["value"].sum().to_numpy(dtype=float)
    dec_tok_s = n_gen / (per_rep / 1e9) if per_rep.size else np.array([])
    out["decode_tok_s"], out["decode_tok_s_std"] = _mean_std(dec_tok_s)
    step_ms = steps["value"].to_numpy(dtype=float) / 1e6
    for p in (50, 90, 99):
        out[f"tpot_ms_p{p}"] = float(np.percentile(step_ms, p)) if step_ms.size else None
    out["prefill_cv"] = _cv(out["prefill_tok_s"], out["prefill_tok_s_std"])
    out["decode_cv"] = _cv(out["decode_tok_s"], out["decode_tok_s_std"])
    return out


def _max_of(s, metric: str) -> float | None:
    v = s[s["metric"] == metric]["value"]
    return float(v.max()) if len(v) else None


def _case_total(s, metric: str) -> float | None:
    """Sum over labels (buffer types) of a per-case memory metric (rep -1, phase 'load')."""
    v = s[(s["metric"] == metric) & (s["phase"] == "load")]
    if not len(v):
        return None
    return float(v.groupby("label")["value"].max().sum())


def memory_summary(s, info: dict[str, Any]) -> dict[str, Any]:
    weights = _case_total(s, "weights_bytes")
    kv = _case_total(s, "kv_bytes")
    compute = _case_total(s, "compute_bytes")
    used = s[(s["metric"] == "kv_used_bytes") & (s["phase"] == "decode")]["value"]
    out: dict[str, Any] = {
        "weights_bytes": weights, "kv_bytes": kv, "compute_bytes": compute,
        "kv_used_bytes": float(used.max()) if len(used) else None,
        "rss_peak_bytes": _max_of(s, "rss_peak_bytes"),
        # NVML's memory timeline (telemetry) where no profiler reported a peak itself
        "gpu_peak_bytes": _max_of(s, "gpu_peak_bytes") or _max_of(s, "gpu_mem_bytes"),
    }
    total = sum(x for x in (weights, kv, compute) if x)
    out["kv_share"] = kv / total if kv and total else None
    embed = info.get("embed_params")
    n_params = info.get("n_params")
    out["embed_share"] = embed / n_params if embed and n_params else None
    return out


def summarize_case(run_id: str, device: str, case: dict[str, Any], s) -> dict[str, Any]:
    """One summary row (SUMMARY_COLUMNS keys first; extra derived keys may follow)."""
    info = case.get("info") or {}
    model_info = info.get("model", {})
    row: dict[str, Any] = {k: case.get(k) for k in case if k in SUMMARY_COLUMNS}
    row.update({k: model_info.get(k) for k in MODEL_INFO_FIELDS if k in SUMMARY_COLUMNS})
    row["run_id"], row["device"] = run_id, device
    row["model"] = model_info.get("model_name") or case.get("model")
    row["n_ctx"] = model_info.get("n_ctx_runtime") or case.get("n_ctx")
    row["synthetic"] = bool(case.get("preset"))
    row.update(timing_summary(s, int(case["n_prompt"]), int(case["n_gen"])))
    row.update(memory_summary(s, model_info))
    if (s["metric"] == "op_ns").any():  # the ops profiler ran: shares computed on read
        from edgebench.analysis.ops import ops_summary

        row.update(ops_summary(s))
    if s["metric"].isin(("energy_j", "power_w", "temp_c")).any():  # telemetry ran
        from edgebench.analysis.energy import summarize_energy

        row.update(summarize_energy(s, int(case["n_prompt"]), int(case["n_gen"])))
    ordered = {k: row.get(k) for k in SUMMARY_COLUMNS}
    ordered.update({k: v for k, v in row.items() if k not in ordered})
    return ordered


def summarize_run(store, run_id: str) -> list[dict[str, Any]]:
    run = store.get_run(run_id)
    all_samples = store.get_samples(run.run_id)
    rows = []
    for case in store.get_cases(run.run_id):
        s = all_samples[all_samples["case_id"] == case["case_id"]]
        rows.append(summarize_case(run.run_id, run.device, case, s))
    return rows


def cv_warnings(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        for key in ("prefill_cv", "decode_cv"):
            cv = r.get(key)
            if cv is not None and not math.isnan(cv) and cv > CV_WARN:
                out.append(f"case {r['case_id']} ({r['model']} {r.get('quant')}): {key.split('_')[0]} "
                           f"coefficient of variation {cv:.0%} > {CV_WARN:.0%}: the machine was noisy, "
                           f"consider more reps or a quieter machine")
    return out


def export_run(store, run_id: str, run_dir: Path) -> list[dict[str, Any]]:
    """(Re)write the run's bundle (run.json, summary.csv, samples.csv, ops.csv); returns the summary rows."""
    run_id = store.get_run(run_id).run_id
    rows = summarize_run(store, run_id)
    samples = store.get_samples(run_id)
    bundle.write_bundle(store, run_id, run_dir, rows, samples, ops_rows(rows, samples))
    return rows


def ops_rows(rows: list[dict[str, Any]], samples) -> list[dict[str, Any]]:
    """Per-op time and share rows of every case the ops profiler ran on (ops.csv)."""
    if not (samples["metric"] == "op_ns").any():
        return []
    from edgebench.analysis.ops import ops_csv_rows

    out: list[dict[str, Any]] = []
    for r in rows:
        s = samples[samples["case_id"] == r["case_id"]]
        if (s["metric"] == "op_ns").any():
            out.extend(ops_csv_rows(r, s))
    return out
