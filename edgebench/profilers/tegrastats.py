"""Jetson tegrastats lines: every field of one line, and the telemetry reading it makes.

Pure text parsing, no process: TegrastatsSource (edgebench.profilers.telemetry_sources) runs
tegrastats and feeds its lines here; tests feed recorded lines from real boards.
"""

from __future__ import annotations

import re
from typing import Any

from edgebench.records import ENERGY_TOTAL

_DATE = re.compile(r"^\s*(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB(?: ?\(cached (\d+)MB\))?")
_CPU = re.compile(r"\bCPU \[([^\]]*)\](?:@(\d+))?", re.I)
_EMC = re.compile(r"\bEMC(?:_FREQ)? +(?:(\d+)%)?(?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D(?:_FREQ)? +(?:(\d+)%)?(?:@\[?([\d,]+)\]?)?")
_TEMP = re.compile(r"\b([A-Za-z]\w*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")


def parse_tegrastats(line: str) -> dict[str, Any]:
    """Every field of one tegrastats line (JetPack 3 to 7 formats), unknown fields ignored.

    Keys (absent fields give None / empty): timestamp, ram_used_mb, ram_total_mb, swap_used_mb,
    swap_total_mb, swap_cached_mb, cpu_load_pct (list, None for 'off' cores), cpu_freq_mhz
    (list), gpu_load_pct, gpu_freq_mhz (highest GPC clock), gpu_freq_mhz_gpc (list), emc_load_pct,
    emc_freq_mhz, temps_c {sensor: C} (as printed, -256 = absent sensor), power_mw {rail: mW now},
    power_avg_mw {rail: mW average since tegrastats started}."""
    out: dict[str, Any] = {k: None for k in (
        "timestamp", "ram_used_mb", "ram_total_mb", "swap_used_mb", "swap_total_mb", "swap_cached_mb",
        "gpu_load_pct", "gpu_freq_mhz", "emc_load_pct", "emc_freq_mhz")}
    out.update(cpu_load_pct=[], cpu_freq_mhz=[], gpu_freq_mhz_gpc=[], temps_c={}, power_mw={}, power_avg_mw={})
    if not isinstance(line, str):
        return out
    if m := _DATE.match(line):
        out["timestamp"] = m.group(1)
    if m := _RAM.search(line):
        out["ram_used_mb"], out["ram_total_mb"] = int(m.group(1)), int(m.group(2))
    if m := _SWAP.search(line):
        out["swap_used_mb"], out["swap_total_mb"] = int(m.group(1)), int(m.group(2))
        out["swap_cached_mb"] = int(m.group(3)) if m.group(3) else None
    if m := _CPU.search(line):
        shared = int(m.group(2)) if m.group(2) else None
        for entry in m.group(1).split(","):
            em = re.fullmatch(r"\s*(\d+)%(?:@(\d+))?\s*", entry)
            out["cpu_load_pct"].append(int(em.group(1)) if em else None)
            out["cpu_freq_mhz"].append(int(em.group(2)) if em and em.group(2) else (shared if em else None))
    if m := _EMC.search(line):
        out["emc_load_pct"] = int(m.group(1)) if m.group(1) else None
        out["emc_freq_mhz"] = int(m.group(2)) if m.group(2) else None
    if m := _GR3D.search(line):
        out["gpu_load_pct"] = int(m.group(1)) if m.group(1) else None
        gpcs = [int(x) for x in (m.group(2) or "").split(",") if x]
        out["gpu_freq_mhz_gpc"] = gpcs
        out["gpu_freq_mhz"] = max(gpcs) if gpcs else None
    for name, value in _TEMP.findall(line):
        out["temps_c"][name] = float(value)
    for name, now, avg in _RAIL.findall(line):
        if name in ("RAM", "SWAP", "IRAM"):
            continue
        out["power_mw"][name], out["power_avg_mw"][name] = int(now), int(avg)
    return out


def tegrastats_reading(p: dict[str, Any]) -> dict[str, dict[str, float]]:
    """A parsed line as a telemetry reading. Drops the placeholder PMIC sensor (always 100 or
    50 C), absent sensors (-256 C) and not-connected 'NC' rails."""
    r: dict[str, dict[str, float]] = {}
    rails = {k: v / 1000.0 for k, v in p["power_mw"].items() if k != "NC"}
    if rails:
        board = next((rails[k] for k in ("VDD_IN", "POM_5V_IN") if k in rails), None)
        r["power_w"] = {**rails, ENERGY_TOTAL: board if board is not None else sum(rails.values())}
    temps = {k: v for k, v in p["temps_c"].items() if v > -40.0 and k.upper() != "PMIC"}
    if temps:
        r["temp_c"] = temps
    loads = [x for x in p["cpu_load_pct"] if x is not None]
    if loads:
        r["cpu_pct"] = {"": sum(loads) / len(loads)}
    freqs = [f for f, x in zip(p["cpu_freq_mhz"], p["cpu_load_pct"]) if f and x is not None]
    if freqs:
        r["cpu_freq_mhz"] = {"avg": sum(freqs) / len(freqs)}
    for key, metric, label in (("gpu_load_pct", "gpu_util_pct", "gr3d"), ("gpu_freq_mhz", "gpu_freq_mhz", "gr3d"),
                               ("emc_load_pct", "emc_util_pct", "emc"), ("emc_freq_mhz", "emc_freq_mhz", "emc")):
        if p.get(key) is not None:
            r[metric] = {label: float(p[key])}
    return r
