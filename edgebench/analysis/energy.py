"""Per-case energy figures on read (the integration itself is edgebench.profilers.integrate).

Pure functions, no I/O, no imports of backends or profilers (report code imports this module).

The telemetry profiler stores, per (rep, phase) window, ``energy_j`` samples (label ``total`` for
the whole device, ``<source>:<rail>`` per rail) and one ``energy_window_ns`` sample; timelines of
``power_w`` / ``temp_c`` and ``throttle`` flags. ``summarize_energy`` turns those into per-case
numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgebench.analysis import per_rep

if TYPE_CHECKING:
    import pandas as pd

MEASURED_PHASES = ("prefill", "decode")


def _window_ns(s: pd.DataFrame, phase: str) -> dict[int, float]:
    """Per-rep window length: the profiler's energy_window_ns, else the timed phase itself."""
    w = s[(s.metric == "energy_window_ns") & (s.phase == phase)]
    if len(w):
        return w.groupby("rep")["value"].sum().to_dict()
    metric = "prefill_ns" if phase == "prefill" else "decode_step_ns"
    t = s[(s.metric == metric) & (s.phase == phase)]
    return t.groupby("rep")["value"].sum().to_dict()


def summarize_energy(samples: pd.DataFrame, n_prompt: int, n_gen: int) -> dict[str, float | bool | None]:
    """Per-case energy figures from one case's samples (columns rep, phase, metric, value, idx,
    label, t_ns). Units: W, J, J/token, degrees C. None where there is no data.

    energy_j_<phase> is the mean over reps of the whole-device energy of one phase window;
    avg_power_w_<phase> = total energy / total window time; j_per_token_prefill divides by
    n_prompt, j_per_token_decode by n_gen, per rep (edgebench.analysis.per_rep), then averaged.
    throttled: a throttle flag in a measured phase (None
    when no source could see throttling: no GPU clock and no throttle reasons were recorded)."""
    out: dict[str, float | bool | None] = {}
    for phase in MEASURED_PHASES:
        for key in ("avg_power_w", "energy_j", "j_per_token"):
            out[f"{key}_{phase}"] = None
    out["temp_max_c"] = None
    out["throttled"] = None
    if samples is None or len(samples) == 0 or "metric" not in samples:
        return out
    s = samples[samples.rep >= 0] if "rep" in samples else samples
    values = per_rep.rep_values(s, n_prompt, n_gen)
    for phase in MEASURED_PHASES:
        energy = per_rep.phase_energy(s, phase)
        if not len(energy):
            continue
        out[f"energy_j_{phase}"] = float(energy.mean())
        out[f"j_per_token_{phase}"] = per_rep.case_value(f"j_per_token_{phase}", values)
        windows = _window_ns(s, phase)
        total_ns = sum(windows.get(r, 0.0) for r in energy.index)
        if total_ns > 0:
            out[f"avg_power_w_{phase}"] = float(energy.sum()) / (total_ns * 1e-9)
    temps = samples[samples.metric == "temp_c"]["value"]
    if len(temps):
        out["temp_max_c"] = float(temps.max())
    # Throttling is observable only through GPU clocks (tegrastats, NVML) or NVML's reasons.
    if samples.metric.isin(("throttle", "gpu_freq_mhz")).any():
        thr = s[(s.metric == "throttle") & s.phase.isin(MEASURED_PHASES) & (s.value > 0)]
        out["throttled"] = bool(len(thr))
    return out


def telemetry_gap(case: dict, s: pd.DataFrame) -> str | None:
    """Why a case measured with --profile telemetry has no energy figures: no power source was
    readable (each source's reason, from the case info), so the terminal and the report can say so
    instead of leaving blank columns. None when energy was measured or telemetry was not asked for."""
    profile = case.get("profile") or ()
    if "telemetry" not in (profile.split(",") if isinstance(profile, str) else profile):
        return None
    if s["metric"].isin(("energy_j", "power_w")).any():
        return None
    notes = ((case.get("info") or {}).get("profiler_notes") or {}).get("telemetry") or {}
    why = "; ".join(f"{k}: {v}" for k, v in (notes.get("skipped") or {}).items())
    why = why or "; ".join(notes.get("warnings") or ()) or "no source reported why"
    return f"telemetry: no power source was readable here, so no energy per token ({why})"
