"""Terminal views for the CLI: summary tables in table/csv/json/md, run lists, presets, GGUF facts."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edgebench.present import format as fmt_

FORMATS = ("table", "csv", "json", "md")


def console_for_tables(width_when_piped: int) -> Console:
    """The terminal's own width on a terminal; a wide fixed width into pipes and CI logs (where
    rich would otherwise assume 80 columns and fold every table)."""
    return Console() if sys.stdout.isatty() else Console(width=width_when_piped)

# Columns of the terminal table (headers and formats: records.FIELDS); every column is in csv/json.
TABLE_COLUMNS: tuple[str, ...] = (
    "case_id", "model", "backend", "quant", "bpw", "n_threads", "n_prompt", "n_gen", "depth", "prefill_tok_s",
    "prefill_tok_s_std", "ttft_ms", "decode_tok_s", "decode_tok_s_std", "tpot_ms_p50", "tpot_ms_p99",
    "rss_peak_bytes", "kv_share", "kld_mean", "same_top_p", "ppl_ratio", "quality_note", "status",
)
_LEFT = ("model", "backend", "quant", "quality_note", "status")


def print_rows(rows: list[dict[str, Any]], fmt: str, title: str = "") -> None:
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
    elif fmt == "csv":
        from edgebench.store.bundle import csv_cell

        buf = io.StringIO()
        cols = list(rows[0]) if rows else []
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: csv_cell(r.get(k)) for k in cols})
        sys.stdout.write(buf.getvalue())
    elif fmt == "md":
        cols = [c for c in TABLE_COLUMNS if any(r.get(c) is not None for r in rows)]
        lines = ["| " + " | ".join(fmt_.header(c) for c in cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            lines.append("| " + " | ".join(fmt_.cell(c, r.get(c)) for c in cols) + " |")
        if title:
            lines.insert(0, f"**{title}**\n")
        sys.stdout.write("\n".join(lines) + "\n")
    else:
        table = Table(title=title or None)
        cols = [c for c in TABLE_COLUMNS if any(r.get(c) is not None for r in rows)]
        for c in cols:
            text = c in _LEFT
            table.add_column(fmt_.header(c), justify="left" if text else "right", no_wrap=text)
        for r in rows:
            cells = [fmt_.cell(c, r.get(c)) for c in cols]
            if r.get("status") == "failed":
                cells[-1] = "[red]failed[/red]"
            table.add_row(*cells)
        console = console_for_tables(250)
        console.print(table)
        for r in rows:
            if r.get("status") == "failed":
                console.print(f"[red]case {r['case_id']} failed:[/red] {r.get('error')}")


def print_runs(store) -> None:
    table = Table(title=f"runs in {store.url}")
    for h in ("run_id", "created", "device", "status", "cases", "models"):
        table.add_column(h)
    for r in store.list_runs():
        cases = store.get_cases(r.run_id)
        ok = sum(c["status"] == "ok" for c in cases)
        models = sorted({Path(c["model"]).name for c in cases})
        table.add_row(r.run_id, time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)), r.device, r.status,
                      f"{ok}/{len(cases)} ok", ", ".join(models)[:60])
    Console().print(table)


def print_presets() -> None:
    from edgebench.models.presets import PRESETS, preset_n_params

    table = Table(title="synthetic presets (shapes from public config.json files)")
    for h in ("preset", "arch", "layers", "hidden", "heads", "kv heads", "head dim", "ffn", "vocab", "tied", "ctx",
              "params (M)", "KV/token f16"):
        table.add_column(h, justify="right" if h not in ("preset", "arch", "tied") else "left", no_wrap=True)
    for p in PRESETS.values():
        table.add_row(p.name, p.arch, str(p.n_layer), str(p.n_embd), str(p.n_head), str(p.n_head_kv), str(p.head_dim),
                      str(p.n_ff), str(p.n_vocab), "yes" if p.tied else "no", str(p.n_ctx_train),
                      f"{preset_n_params(p) / 1e6:.1f}", f"{p.kv_bytes_per_token_f16 / 1024:.1f} KiB")
    console_for_tables(150).print(table)


def print_gguf_info(path: Path) -> None:
    from edgebench.models.gguf_file import read_gguf_info

    gi = read_gguf_info(path)
    c = Console()
    c.print(f"[bold]{path}[/bold]")
    for k in ("arch", "name", "synthetic_preset", "quant", "bpw", "n_params", "tensor_bytes", "file_bytes", "n_layer",
              "n_embd", "n_head", "n_head_kv", "head_dim", "n_ff", "n_vocab", "n_ctx_train", "tied", "embed_params"):
        v = getattr(gi, k)
        c.print(f"  {k:17} {v:.3f}" if isinstance(v, float) else f"  {k:17} {v}")
    table = Table(title="tensor types per group")
    table.add_column("group")
    table.add_column("types")
    for g, types in gi.tensor_types.items():
        table.add_row(g, ", ".join(f"{t} x{n}" for t, n in types.items()))
    c.print(table)


def print_memory_projection(model: str, ctxs: list[int], cache_types: list[str], quant: str,
                            device: str | None, n_ubatch: int = 512, flash_attn: bool = True) -> list[dict]:
    """`edgebench memory`: weights / KV / compute per context and cache type, without running."""
    from edgebench.errors import InputError
    from edgebench.machine import profiles
    from edgebench.models import memory_model
    from edgebench.models.presets import is_preset

    if is_preset(model) and not Path(model).exists():
        shapes = memory_model.shapes_from_preset(model, quant)
    elif Path(model).suffix.lower() == ".gguf":
        shapes = memory_model.shapes_from_gguf(model)
    else:
        raise InputError(f"{model!r} is neither a .gguf file nor a preset")
    limit = None
    if device:
        prof = profiles.get_profile(device) if device != "auto" else profiles.detect()
        limit = (prof.name, profiles.memory_bytes(prof))
    rows = []
    for ct in cache_types:
        for n in ctxs:
            try:
                r = memory_model.project(shapes, n, ct, n_ubatch, flash_attn)
            except (KeyError, ValueError) as e:
                raise InputError(f"cache type {ct!r}: {e}") from None
            r["fits"] = None if limit is None else r["total_bytes"] <= limit[1]
            rows.append(r)
    gib = 2**30
    title = f"memory projection: {shapes.name}" + ("" if shapes.weights_exact else " (weights from nominal bpw)")
    if limit:
        title += f" on {limit[0]} ({limit[1] / gib:.1f} GiB)"
    table = Table(title=title)
    for h in ("ctx", "cache", "weights GiB", "KV GiB", "compute GiB (est.)", "total GiB", "KV share", "fits"):
        table.add_column(h, justify="right")
    for r in rows:
        fits = "-" if r["fits"] is None else ("yes" if r["fits"] else "[red]no[/red]")
        table.add_row(str(r["n_ctx"]), r["cache_type"], f"{r['weights_bytes'] / gib:.3f}", f"{r['kv_bytes'] / gib:.3f}",
                      f"{r['compute_bytes'] / gib:.3f}", f"{r['total_bytes'] / gib:.3f}", f"{r['kv_share']:.1%}", fits)
    Console().print(table)
    return rows


def print_devices() -> None:
    from edgebench.machine.profiles import load_profiles

    table = Table(title="device profiles (devices/*.toml); `edgebench devices show NAME` for details and sources")
    for h in ("name", "aliases", "memory GiB", "GB/s"):
        table.add_column(h, no_wrap=True)
    for p in load_profiles().values():
        table.add_row(p.name, ", ".join(p.aliases), f"{p.memory_bytes / 2**30:.0f}" if p.memory_bytes else "this machine's",
                      f"{p.mem_bandwidth_gbs:g}" if p.mem_bandwidth_gbs else "-")
    console_for_tables(100).print(table)


def print_device(name: str) -> None:
    import dataclasses

    from edgebench.machine.profiles import get_profile

    p = get_profile(name)
    c = Console()
    c.print(f"[bold]{p.name}[/bold]: {p.description}")
    for f in dataclasses.fields(p):
        v = getattr(p, f.name)
        if f.name in ("name", "description", "sources", "path") or v in (None, {}, ()):
            continue
        c.print(f"  {f.name:18} {json.dumps(v, default=str) if isinstance(v, (dict, list, tuple)) else v}")
    if p.sources:
        c.print("  sources:")
        for k, v in p.sources.items():
            c.print(f"    {k}: {v}")


def print_detect() -> None:
    from edgebench.machine.profiles import describe_evidence, detect, probe

    ev = probe()
    prof = detect(ev)
    Console().print(f"this machine is [bold]{prof.name}[/bold] ({describe_evidence(ev)})")
