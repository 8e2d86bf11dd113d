"""The ONLY definitions of per-rep metric values, and of the one per-case value made from them.

``rep_values`` turns one case's raw samples into per-rep values of every metric (units of
records.FIELDS: tok/s, ms, bytes, J/token); ``center`` makes the per-case value with the metric's
FIELDS center rule. The summary (show, report, summary.csv) and compare (its baseline / candidate
columns, ratio and bootstrap interval) both take their numbers from here, so the same run prints
the same number everywhere.

Definitions (DESIGN.md, measurement method), per rep (rep >= 0: the plain timing reps; the worker's
load samples have rep -1, a first rep -r auto discarded as extra warmup rep -2):
  prefill_tok_s = n_prompt / the rep's prefill time; ttft_ms = that time
  decode_tok_s = n_gen / the sum of the rep's step times (never total minus prefill)
  tpot_ms_pXX = the XXth percentile (linear interpolation) of the rep's step times
  load_ms = each load (one per case)
  weights / kv / compute / repack_bytes = once per case: the sum over buffer types of each type's
      largest value (weights count each tensor once; repack_bytes is the repacked copy on top)
  kv_used_bytes = the largest cache fill seen in the rep's decode phase
  rss_peak_bytes, gpu_peak_bytes = the rep's peak, or the load peak where that is higher (the
      process holds what loading made it hold); GPU from the NVML timeline where no peak was reported
  j_per_token_<phase> = the rep's whole-device energy over the phase window / that phase's tokens
  kld_mean, same_top_p, ppl_ratio = once per case (a one-element array): the quality pass's
      statistics over its scored tokens (edgebench.analysis.quality.summarize_samples)

Pure functions, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edgebench.records import ENERGY_TOTAL, FIELDS

if TYPE_CHECKING:
    import pandas as pd

TPOT_PERCENTILES = (50, 90, 99)
_CENTERS = {"mean": np.mean, "median": np.median, "max": np.max}
PER_REP_METRICS: tuple[str, ...] = tuple(f.name for f in FIELDS.values() if f.center)


def center(name: str, values: np.ndarray, axis: int | None = None):
    """The per-case value of metric ``name`` from its per-rep ``values`` (FIELDS[name].center);
    with ``axis``, the center along it (bootstrap resamples)."""
    return _CENTERS[FIELDS[name].center](values, axis=axis)


def case_value(name: str, values: dict[str, np.ndarray]) -> float | None:
    """center() of ``values[name]``, None where the metric was not measured."""
    v = values.get(name)
    return float(center(name, v)) if v is not None and v.size else None


def spread(name: str, values: dict[str, np.ndarray]) -> float | None:
    """Standard deviation over reps (ddof 1); None where not measured and for one rep (unknown, not 0)."""
    v = values.get(name)
    if v is None or v.size < 2:
        return None
    return float(v.std(ddof=1))


def ci_halfwidth_rel(values) -> float | None:
    """The 95% t-interval half-width of the mean of per-rep ``values``, relative to the mean (the
    -r auto stopping rule and the summary's ci_pct); None below two reps or for a mean <= 0."""
    v = np.asarray(values, dtype=float)
    if v.size < 2 or v.mean() <= 0:
        return None
    return float(t975(v.size - 1) * v.std(ddof=1) / np.sqrt(v.size) / v.mean())


# Student's t 0.975 quantile for 1..30 degrees of freedom (scipy.stats.t.ppf, 6 decimals), and past
# 30 its Cornish-Fisher expansion (Abramowitz & Stegun 26.7.5; within 2e-8 of scipy). Not scipy
# itself: importing scipy.stats costs a worker process 0.5-1.4 s, more than a small model's reps.
_T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
         2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
         2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` >= 1 degrees of freedom (a 95% two-sided interval)."""
    if df <= len(_T975):
        return _T975[df - 1]
    z, n = 1.959963984540054, float(df)
    g = ((z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96, (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
         (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return z + sum(gi / n ** (i + 1) for i, gi in enumerate(g))


def phase_energy(s: pd.DataFrame, phase: str) -> pd.Series:
    """Whole-device energy (J) of each plain rep's ``phase`` window, indexed by rep."""
    e = s[(s["metric"] == "energy_j") & (s["phase"] == phase) & (s["label"] == ENERGY_TOTAL) & (s["rep"] >= 0)]
    return e.groupby("rep")["value"].sum()


def _per_case_bytes(s: pd.DataFrame, metric: str) -> np.ndarray | None:
    v = s[(s["metric"] == metric) & (s["phase"] == "load")]
    if not len(v):
        return None
    return np.array([float(v.groupby("label")["value"].max().sum())])


def _peak(s: pd.DataFrame, metric: str) -> np.ndarray | None:
    v = s[s["metric"] == metric]
    if not len(v):
        return None
    before = v[v["rep"] < 0]["value"]
    load_peak = float(before.max()) if len(before) else 0.0
    per_rep = v[v["rep"] >= 0].groupby("rep")["value"].max().to_numpy(dtype=float)
    return np.maximum(per_rep, load_peak) if per_rep.size else np.array([load_peak])


def rep_values(s: pd.DataFrame | None, n_prompt: int, n_gen: int) -> dict[str, np.ndarray]:
    """Per-rep values of every metric of one case (a DataFrame of its Sample rows: rep, phase,
    metric, value, label); a metric without samples is absent. Units as records.FIELDS."""
    if s is None or not len(s):
        return {}
    n_prompt, n_gen = int(n_prompt or 0), int(n_gen or 0)
    out: dict[str, np.ndarray] = {}
    plain = s[s["rep"] >= 0]
    load = s[s["metric"] == "load_ns"]["value"].to_numpy(dtype=float)
    if load.size:
        out["load_ms"] = load / 1e6
    pre = plain[plain["metric"] == "prefill_ns"].groupby("rep")["value"].sum().to_numpy(dtype=float)
    if pre.size:
        out["ttft_ms"] = pre / 1e6
        if n_prompt:
            out["prefill_tok_s"] = n_prompt / (pre / 1e9)
    steps = plain[plain["metric"] == "decode_step_ns"].groupby("rep")["value"]
    if steps.ngroups:
        if n_gen:
            out["decode_tok_s"] = n_gen / (steps.sum().to_numpy(dtype=float) / 1e9)
        for q in TPOT_PERCENTILES:
            out[f"tpot_ms_p{q}"] = steps.quantile(q / 100).to_numpy(dtype=float) / 1e6
    else:  # the steps timed as one (an imported llama-bench tg test): throughput, no percentiles
        whole = plain[plain["metric"] == "decode_ns"].groupby("rep")["value"].sum().to_numpy(dtype=float)
        if whole.size and n_gen:
            out["decode_tok_s"] = n_gen / (whole / 1e9)
    for m in ("weights_bytes", "kv_bytes", "compute_bytes", "repack_bytes"):
        v = _per_case_bytes(s, m)
        if v is not None:
            out[m] = v
    used = plain[(plain["metric"] == "kv_used_bytes") & (plain["phase"] == "decode")]
    if len(used):
        out["kv_used_bytes"] = used.groupby("rep")["value"].max().to_numpy(dtype=float)
    for m in ("rss_peak_bytes", "gpu_peak_bytes"):
        v = _peak(s, m)
        if m == "gpu_peak_bytes" and (v is None or not v.max()):
            v = _peak(s, "gpu_mem_bytes")  # NVML's timeline (telemetry) where no profiler reported a peak
        if v is not None:
            out[m] = v
    for phase, tokens in (("prefill", n_prompt), ("decode", n_gen)):
        e = phase_energy(plain, phase)
        if len(e) and tokens > 0:
            out[f"j_per_token_{phase}"] = e.to_numpy(dtype=float) / tokens
    if (s["metric"] == "kld").any():
        out.update(quality_values(s))
    return out


QUALITY_PER_CASE = ("kld_mean", "same_top_p", "ppl_ratio")


def process_rep_values(s: pd.DataFrame, processes: list[list[int]], n_prompt: int, n_gen: int) -> list[dict[str, np.ndarray]]:
    """rep_values of each worker process of a case run in several (``processes``: the reps of each,
    case info "processes"); a process with no reps is left out."""
    return [rep_values(s[s["rep"].isin(reps)], n_prompt, n_gen) for reps in processes if reps]


def quality_values(s: pd.DataFrame, stats: dict[str, float] | None = None) -> dict[str, np.ndarray]:
    """The compared quality metrics of one case as one-element arrays (from ``stats``, the case's
    quality.summarize_samples(), when the caller has it)."""
    from edgebench.analysis.quality import summarize_samples

    stats = summarize_samples(s) if stats is None else stats
    return {m: np.array([stats[m]]) for m in QUALITY_PER_CASE if m in stats}
