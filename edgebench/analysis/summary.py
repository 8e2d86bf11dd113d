"""Per-case summaries computed on read from the raw samples (nothing derived is stored).

Every metric value is per_rep's: its per-rep definition and its FIELDS center rule.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.analysis import per_rep
from edgebench.records import MODEL_INFO_FIELDS, SUMMARY_COLUMNS, kv_positions, llama_bench_name
from edgebench.store import bundle

CV_WARN = 0.10  # DESIGN.md: warn when the coefficient of variation is above 10%


def _cv(mean: float | None, std: float | None) -> float | None:
    return std / mean if mean and std is not None else None


def _summary_values(v: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-case values of every per-rep metric (per_rep.center: the FIELDS center rule) and the
    std over reps of the two throughputs."""
    out: dict[str, Any] = {m: per_rep.case_value(m, v) for m in per_rep.PER_REP_METRICS}
    for m in ("prefill_tok_s", "decode_tok_s"):
        out[f"{m}_std"] = per_rep.spread(m, v)
    out["prefill_cv"] = _cv(out["prefill_tok_s"], out["prefill_tok_s_std"])
    out["decode_cv"] = _cv(out["decode_tok_s"], out["decode_tok_s_std"])
    timed = [v[m] for m in ("prefill_tok_s", "decode_tok_s") if m in v]
    out["reps_used"] = max((len(x) for x in timed), default=None)
    cis = [c for c in (per_rep.ci_halfwidth_rel(x) for x in timed) if c is not None]
    out["ci_pct"] = max(cis) * 100 if cis else None  # the wider of the two throughputs' 95% CI
    return out


_TIMING = ("load_ms", "prefill_tok_s", "prefill_tok_s_std", "ttft_ms", "decode_tok_s", "decode_tok_s_std",
           "tpot_ms_p50", "tpot_ms_p90", "tpot_ms_p99", "prefill_cv", "decode_cv", "reps_used", "ci_pct")
_MEMORY = ("weights_bytes", "kv_bytes", "compute_bytes", "kv_used_bytes", "rss_peak_bytes", "gpu_peak_bytes",
           "repack_bytes")


def timing_summary(s, n_prompt: int, n_gen: int) -> dict[str, Any]:
    """Throughput and latency of one case from its samples (a DataFrame of Sample rows), as
    edgebench.analysis.per_rep defines them: throughputs are the mean over reps (with the std over
    reps), TTFT and the TPOT percentiles (each rep's own) the median over reps."""
    out = _summary_values(per_rep.rep_values(s, n_prompt, n_gen))
    return {k: out[k] for k in _TIMING}


def memory_summary(s, info: dict[str, Any], values: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Buffer sizes (once per case), the peaks (max over reps, load included) and the shares."""
    v = per_rep.rep_values(s, 0, 0) if values is None else values
    out: dict[str, Any] = {m: per_rep.case_value(m, v) for m in _MEMORY}
    # Weights counted once (weights_bytes); the repacked copy (repack_bytes) is not added.
    weights, kv, compute = out["weights_bytes"], out["kv_bytes"], out["compute_bytes"]
    total = sum(x for x in (weights, kv, compute) if x)
    out["kv_share"] = kv / total if kv and total else None
    embed = info.get("embed_params")
    n_params = info.get("n_params")
    out["embed_share"] = embed / n_params if embed and n_params else None
    return out


def summarize_case(run_id: str, device: str, case: dict[str, Any], s, verified: bool = True) -> dict[str, Any]:
    """One summary row (SUMMARY_COLUMNS keys first; extra derived keys may follow). ``verified``
    False: the run was measured with --no-verify on a machine that is not ``device``."""
    info = case.get("info") or {}
    model_info = info.get("model", {})
    row: dict[str, Any] = {k: case.get(k) for k in case if k in SUMMARY_COLUMNS}
    row.update({k: model_info.get(k) for k in MODEL_INFO_FIELDS if k in SUMMARY_COLUMNS})
    row["run_id"], row["device"], row["device_verified"] = run_id, device, verified
    # A hub model is named as the user named it (ORG/REPO); the file's own name stays a field.
    row["model"] = case.get("hub_repo") or model_info.get("model_name") or case.get("model")
    if case.get("hub_repo"):
        row["model_name"] = model_info.get("model_name")
    row["n_ctx"] = model_info.get("n_ctx_runtime") or case.get("n_ctx")
    # random weights: built from a preset here, or a preset's file given with -m (its GGUF says so)
    row["synthetic"] = bool(case.get("preset") or model_info.get("synthetic_preset"))
    kind = case.get("test") or "pg"  # a case stored before tests had a kind was a pg test
    row["test"] = llama_bench_name(kind, case["n_prompt"], case["n_gen"], case.get("depth") or 0)
    for phase, span in kv_positions(kind, case["n_prompt"], case["n_gen"], case.get("depth") or 0).items():
        row[f"{phase}_pos"] = f"{span[0]}-{span[1]}" if span else None
    values = per_rep.rep_values(s, int(case["n_prompt"]), int(case["n_gen"]))
    summary = _summary_values(values)
    row.update({k: summary[k] for k in _TIMING})
    row.update(memory_summary(s, model_info, values))
    if len(info.get("processes") or ()) > 1:  # --processes N: the spread that is really there
        spread = process_spread(s, info["processes"], int(case["n_prompt"]), int(case["n_gen"]))
        between = [spread.pop(f"{m}_between_ci") for m in ("prefill", "decode")]
        row.update(spread)
        wider = [c * 100 for c in between if c is not None] + ([row["ci_pct"]] if row["ci_pct"] is not None else [])
        row["ci_pct"] = max(wider) if wider else None
    reps_info = info.get("reps") or {}
    row["reps_discarded"] = len(reps_info.get("discarded") or ()) if reps_info else None
    row["reps_stop"] = reps_info.get("stop") or None
    if (s["metric"] == "op_ns").any():  # the ops profiler ran: shares computed on read
        from edgebench.analysis.ops import ops_summary

        row.update(ops_summary(s))
    if (s["metric"] == "kld").any():  # the quality pass ran
        row.update(quality_summary(s, row["synthetic"]))
    if s["metric"].isin(("energy_j", "power_w", "temp_c")).any():  # telemetry ran
        from edgebench.analysis.energy import summarize_energy

        row.update(summarize_energy(s, int(case["n_prompt"]), int(case["n_gen"])))
    ordered = {k: row.get(k) for k in SUMMARY_COLUMNS}
    ordered.update({k: v for k, v in row.items() if k not in ordered})
    return ordered


def process_spread(s, processes: list[list[int]], n_prompt: int, n_gen: int) -> dict[str, Any]:
    """Within- and between-process spread of the two throughputs of a case run in several worker
    processes (``processes``: the reps of each): the pooled within-process std and the std of the
    processes' means, both relative to the mean of the means, and the 95% interval of the mean of
    the means (t over the processes, relative: "<phase>_between_ci"), which ci_pct takes where it
    is wider than the interval over all reps, so an interval is honest about process-to-process variance."""
    out: dict[str, Any] = {"processes": len(processes)}
    per = per_rep.process_rep_values(s, processes, n_prompt, n_gen)
    for phase, m in (("prefill", "prefill_tok_s"), ("decode", "decode_tok_s")):
        groups = [v[m] for v in per if m in v and v[m].size]
        means = np.array([g.mean() for g in groups])
        ok = len(groups) > 1 and means.mean() > 0
        within = [g.var(ddof=1) for g in groups if g.size > 1]
        out[f"{phase}_within_cv"] = float(np.sqrt(np.mean(within)) / means.mean()) if ok and within else None
        out[f"{phase}_between_cv"] = float(means.std(ddof=1) / means.mean()) if ok else None
        out[f"{phase}_between_ci"] = per_rep.ci_halfwidth_rel(means) if ok else None
    return out


def quality_summary(s, synthetic: bool) -> dict[str, Any]:
    """The quality statistics of one case (edgebench.analysis.quality.SUMMARY_KEYS), labelled
    when the model has random weights."""
    from edgebench.analysis.quality import SYNTHETIC_NOTE, summarize_samples

    out: dict[str, Any] = dict(summarize_samples(s))
    if out and synthetic:
        out["quality_note"] = SYNTHETIC_NOTE
    return out


def summarize_run(store, run_id: str) -> list[dict[str, Any]]:
    run = store.get_run(run_id)
    all_samples = store.get_samples(run.run_id)
    rows = []
    for case in store.get_cases(run.run_id):
        s = all_samples[all_samples["case_id"] == case["case_id"]]
        rows.append(summarize_case(run.run_id, run.device, case, s, run.verified))
    return rows


def cv_warnings(rows: list[dict[str, Any]]) -> list[str]:
    """One line per phase whose coefficient of variation is above CV_WARN in some case, naming
    the cases (a 16-case sweep on a noisy machine says so twice, not 32 times)."""
    out = []
    for key in ("prefill_cv", "decode_cv"):
        noisy = [(r["case_id"], cv) for r in rows
                 if (cv := r.get(key)) is not None and not math.isnan(cv) and cv > CV_WARN]
        if noisy:
            cases = ", ".join(f"{cid} ({cv:.0%})" for cid, cv in noisy)
            out.append(f"{key.split('_')[0]} coefficient of variation > {CV_WARN:.0%} in case{'s' if len(noisy) > 1 else ''} "
                       f"{cases}: the machine was noisy, consider more reps or a quieter machine")
    # -r auto cases that ran out of reps or time before their interval reached --target-ci
    # (reps_stop: RepPlan's reason, per process joined by ",", then "; processes <ProcessLoop's>")
    short = [(r["case_id"], r.get("ci_pct"), stop) for r in rows
             if any(cap in (stop := str(r.get("reps_stop") or "")) for cap in ("max_reps", "max_time", "max_processes"))]
    if short:
        cases = ", ".join(f"{cid} ({ci:.1f}%, {stop})" if isinstance(ci, (int, float)) else f"{cid} ({stop})"
                          for cid, ci, stop in short)
        out.append(f"-r auto: case{'s' if len(short) > 1 else ''} {cases} stopped before the interval reached "
                   f"--target-ci; ci_pct is the interval reached (raise --max-reps, --max-time or --max-processes, or use a "
                   f"quieter machine)")
    return out


def export_run(store, run_id: str, run_dir: Path, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """(Re)write the run's bundle (run.json, summary.csv, samples.csv, ops.csv); returns the summary rows.
    ``extra``: keys added to run.json by the run writing it (bundle.write_run_json)."""
    run_id = store.get_run(run_id).run_id
    rows = summarize_run(store, run_id)
    samples = store.get_samples(run_id)
    bundle.write_bundle(store, run_id, run_dir, rows, samples, ops_rows(rows, samples), extra)
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
