"""`edgebench devices show NAME`: one profile as a person reads it: the figures with their sources
side by side, each power-mode table as a table (one row per nvpmodel mode), the recommended
settings and fair-run requirements as key = value lines. Every text from the profile's TOML is
escaped (rich markup would otherwise eat a [bracket] in a source)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

_FIGURES = (("memory_bytes", "memory", lambda v: f"{v / 2**30:g} GiB"),
            ("mem_bandwidth_gbs", "peak DRAM bandwidth", lambda v: f"{v:g} GB/s"),
            ("peak_tflops_fp16", "peak FP16", lambda v: f"{v:g} TFLOPS"),
            ("peak_tflops_fp32", "peak FP32", lambda v: f"{v:g} TFLOPS"),
            ("peak_int8_tops", "peak INT8 (sparse)", lambda v: f"{v:g} TOPS"))
# power-mode columns in this order when present (nvpmodel's fields as the profiles store them)
_MODE_COLUMNS = {"id": "id", "name": "name", "cpu_cores": "CPU cores", "cpu_max_mhz": "CPU max MHz",
                 "gpu_max_mhz": "GPU max MHz", "emc_max_mhz": "EMC max MHz", "mem_bandwidth_gbs": "GB/s",
                 "peak_tflops_fp32": "FP32 TFLOPS", "peak_int8_tops": "INT8 TOPS"}


def _text(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k}={_text(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(_text(x) for x in v)
    return "" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def figures_table(p) -> Table:
    t = Table(title=f"{escape(p.name)}: figures and their sources", show_lines=True)
    for h in ("figure", "value", "source"):
        t.add_column(h, overflow="fold")
    for key, label, fmt in _FIGURES:
        v = getattr(p, key)
        unknown = {"memory_bytes": "read at run time", "mem_bandwidth_gbs": "measured at run time (roofline)"}
        t.add_row(label, fmt(v) if v is not None else unknown.get(key, "not known"), escape(str(p.sources.get(key, ""))))
    return t


def mode_tables(p) -> list[Table]:
    out = []
    for table_name, tab in p.power_modes.items():
        modes = tab.get("modes", [])
        cols = [c for c in _MODE_COLUMNS if any(c in m for m in modes)]
        cols += sorted({k for m in modes for k in m} - set(cols))
        t = Table(title=f"power modes '{escape(table_name)}' ({escape(str(tab.get('conf', '')))}; default id "
                        f"{escape(str(tab.get('default', '?')))})")
        for c in cols:
            t.add_column(escape(_MODE_COLUMNS.get(c, c)), justify="left" if c == "name" else "right", no_wrap=True)
        for m in modes:
            t.add_row(*(escape(_text(m.get(c))) for c in cols))
        out.append(t)
    return out


def print_device(p, console: Console | None = None) -> None:
    c = console or Console()
    c.print(f"[bold]{escape(p.name)}[/bold]: {escape(p.description)}", soft_wrap=True)
    if p.aliases:
        c.print(f"aliases: {escape(', '.join(p.aliases))}", soft_wrap=True)
    c.print(figures_table(p))
    for t in mode_tables(p):
        c.print(t)
    for key, label in (("telemetry", "telemetry sources"), ("recommended", "recommended"), ("fair_run", "fair run"),
                       ("detect", "detected by")):
        v = getattr(p, key)
        if v:
            c.print(f"{label}: {escape(_text(v))}", soft_wrap=True)
    shown = {k for k, _, _ in _FIGURES}
    rest = {k: v for k, v in p.sources.items() if k not in shown}
    if rest:
        c.print("other sources:")
        for k, v in rest.items():
            c.print(f"  {escape(k)}: {escape(str(v))}", soft_wrap=True)
