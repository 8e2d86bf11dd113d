"""Energy from telemetry series: trapezoids over power samples, deltas of cumulative counters.
Pure arithmetic used while measuring (the telemetry profiler); times in ns, power in W, energy in J."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence


def _value_at(ts: Sequence[int], vs: Sequence[float], t: int) -> float:
    """Linear interpolation of a sampled series at ``t``; held constant outside the samples."""
    i = bisect_left(ts, t)
    if i < len(ts) and ts[i] == t:
        return vs[i]
    if i == 0:
        return vs[0]
    if i == len(ts):
        return vs[-1]
    t0, t1 = ts[i - 1], ts[i]
    return vs[i - 1] + (vs[i] - vs[i - 1]) * (t - t0) / (t1 - t0)


def integrate_power(ts: Sequence[int], watts: Sequence[float], start_ns: int, end_ns: int) -> float | None:
    """Joules over [start_ns, end_ns] from power samples (times in ns, sorted): trapezoids between
    the samples, with the series interpolated at the window edges. Exact for a power trace that is
    linear between samples; None without samples."""
    if not ts or end_ns < start_ns:
        return None
    pts = [(start_ns, _value_at(ts, watts, start_ns))]
    lo, hi = bisect_right(ts, start_ns), bisect_left(ts, end_ns)
    pts += [(ts[i], watts[i]) for i in range(lo, hi)]
    pts.append((end_ns, _value_at(ts, watts, end_ns)))
    joules = 0.0
    for (t0, p0), (t1, p1) in zip(pts, pts[1:]):
        joules += 0.5 * (p0 + p1) * (t1 - t0) * 1e-9
    return joules


def counter_delta(ts: Sequence[int], joules: Sequence[float], start_ns: int, end_ns: int) -> float | None:
    """Joules over [start_ns, end_ns] from a cumulative energy counter (already unwrapped), read
    at the sample times and interpolated at the window edges. None without samples."""
    if not ts or end_ns < start_ns:
        return None
    return _value_at(ts, joules, end_ns) - _value_at(ts, joules, start_ns)
