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
from edgebench.records import FIELDS

FORMATS = ("table", "csv", "json", "md")


def console_for_tables(width_when_piped: int) -> Console:
    """The terminal's own width on a terminal; a wide fixed width into pipes and CI logs (where
    rich would otherwise assume 80 columns and fold every table)."""
    return Console() if sys.stdout.isatty() else Console(width=width_when_piped)

# Columns of the results table (headers and formats: records.FIELDS); every column is in csv/json.
# Key fields are columns only where they vary within the rows; the others are said once, above.
KEY_COLUMNS: tuple[str, ...] = (
    "model", "backend", "test", "n_threads", "n_gpu_layers", "n_prompt", "n_gen", "depth", "n_ctx", "n_batch",
    "n_ubatch", "flash_attn", "cache_type_k", "cache_type_v", "ep", "graph_opt",
)
METRIC_COLUMNS: tuple[str, ...] = (
    "bpw", "prefill_tok_s", "prefill_tok_s_std", "ttft_ms", "decode_tok_s", "decode_tok_s_std", "tpot_ms_p50",
    "tpot_ms_p99", "rss_peak_bytes", "kv_share", "kld_mean", "same_top_p", "ppl_ratio", "quality_note", "status",
)
TABLE_COLUMNS: tuple[str, ...] = ("case_id", *KEY_COLUMNS[:1], "quant", *KEY_COLUMNS[1:], *METRIC_COLUMNS)
_LEFT = ("model", "backend", "quant", "test", "quality_note", "status")


def _present(rows: list[dict[str, Any]], c: str) -> bool:
    return any(r.get(c) is not None and r.get(c) != "" for r in rows)


def layout(rows: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[str, str]]:
    """(identity columns, metric columns, constant key fields -> shown value) of a results table:
    case, quant and every key field that varies; the measured columns present; the rest, the
    fields every row shares, said once ("backend llama-cpp, t=4")."""
    ident, constant = ["case_id"], {}
    for c in ("model", "quant", *KEY_COLUMNS[1:]):
        shown = {fmt_.cell(c, r.get(c)) for r in rows if r.get(c) is not None and r.get(c) != ""}
        if len(shown) > 1 or (c == "quant" and shown):
            ident.append(c)
        elif shown:
            constant[c] = shown.pop()
    return ident, [c for c in METRIC_COLUMNS if _present(rows, c)], constant


def _shared_line(constant: dict[str, str]) -> str:
    """"all cases: model X, backend llama-cpp, t=4, p=512": the key fields every row shares."""
    onnx = constant.get("backend", "onnx").startswith("onnx")  # ep and graph_opt mean nothing to llama.cpp
    parts = [f"{FIELDS[k].short}={v}" if FIELDS[k].short else f"{k} {v}" for k, v in constant.items()
             if onnx or k not in ("ep", "graph_opt")]
    return "all cases: " + ", ".join(parts) if parts else ""


def _width(rows: list[dict[str, Any]], c: str) -> int:
    """Columns that ``c`` needs: its header and its widest cell, whole (no_wrap), with padding and rule."""
    return max(len(fmt_.header(c)), *(len(fmt_.cell(c, r.get(c))) for r in rows)) + 3


def column_groups(rows: list[dict[str, Any]], width: int) -> list[list[str]] | None:
    """The columns of each stacked table: the identity columns, then as many measured columns as
    fit in ``width``; None when not even one measured column fits beside them (vertical layout)."""
    ident, metrics, _ = layout(rows)
    base = 1 + sum(_width(rows, c) for c in ident)
    units: list[list[str]] = []  # a value and its ± stay side by side
    for m in metrics:
        if m.endswith("_std") and units and units[-1][0] == m[:-4]:
            units[-1].append(m)
        else:
            units.append([m])
    groups: list[list[str]] = []
    used = width + 1
    for unit in units:
        w = sum(_width(rows, m) for m in unit)
        if base + w > width:
            return None
        if used + w > width:
            groups.append(list(ident))
            used = base
        groups[-1].extend(unit)
        used += w
    return groups or [ident]


def print_rows(rows: list[dict[str, Any]], fmt: str, title: str = "", console: Console | None = None) -> None:
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
        ident, metrics, constant = layout(rows)
        cols = ident + metrics
        lines = ["| " + " | ".join(fmt_.header(c) for c in cols) + " |", "|" + "---|" * len(cols)]
        for r in rows:
            lines.append("| " + " | ".join(fmt_.cell(c, r.get(c)) for c in cols) + " |")
        if constant:
            lines.insert(0, _shared_line(constant) + "\n")
        if title:
            lines.insert(0, f"**{title}**\n")
        sys.stdout.write("\n".join(lines) + "\n")
    else:
        print_table(rows, title, console or console_for_tables(250))


def print_table(rows: list[dict[str, Any]], title: str, console: Console) -> None:
    """The results as stacked tables that fit the console (every number whole), or one block per
    case when even one measured column does not fit beside the case's name."""
    from rich.markup import escape

    _, _, constant = layout(rows)
    if title:
        console.print(escape(title), style="italic")
    if constant:  # prose: wrapped at spaces on a narrow terminal, one line in a pipe
        console.print(escape(_shared_line(constant)))
    groups = column_groups(rows, console.width)
    if groups is None:
        _print_vertical(rows, console)
    for cols in groups or []:
        table = Table()
        for c in cols:
            table.add_column(fmt_.header(c), justify="left" if c in _LEFT else "right", no_wrap=True)
        for r in rows:  # cells hold file names and runtime text: escaped, never read as markup
            cells = [escape(fmt_.cell(c, r.get(c))) for c in cols]
            if r.get("status") == "failed" and cols[-1] == "status":
                cells[-1] = "[red]failed[/red]"
            table.add_row(*cells)
        console.print(table)
    for r in rows:
        if r.get("status") == "failed":
            console.print(f"[red]case {r['case_id']} failed:[/red] {escape(str(r.get('error')))}", soft_wrap=True)


def _print_vertical(rows: list[dict[str, Any]], console: Console) -> None:
    from rich.markup import escape

    ident, metrics, _ = layout(rows)
    for r in rows:
        name = " ".join(fmt_.cell(c, r.get(c)) if c in ("case_id", "model", "quant") else
                        f"{fmt_.header(c)}={fmt_.cell(c, r.get(c))}" for c in ident)
        console.print(f"[bold]case {escape(name)}[/bold]", soft_wrap=True)
        for c in metrics:
            console.print(f"  {escape(fmt_.header(c))}: {escape(fmt_.cell(c, r.get(c)))}", soft_wrap=True)


def print_runs(store) -> None:
    """The runs of a store; a `running` run whose process is gone shows as `abandoned` (store/liveness.py)."""
    from rich.markup import escape

    from edgebench.store.liveness import shown_status

    table = Table(title=f"runs in {store.url}")
    for h in ("run_id", "created", "device", "status", "cases", "models"):  # ids whole: grep must find them
        table.add_column(h, no_wrap=h in ("run_id", "created", "status", "cases"))
    for r in store.list_runs():
        cases = store.get_cases(r.run_id)
        ok = sum(c["status"] == "ok" for c in cases)
        models = sorted({model_name(c) for c in cases})
        shown = ", ".join(models[:3]) + (f" and {len(models) - 3} more" if len(models) > 3 else "")
        table.add_row(escape(r.run_id), time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)), escape(r.device_shown),
                      shown_status(r) + (" (llama-bench)" if (r.env or {}).get("imported_from") else ""),
                      f"{ok}/{len(cases)} ok", escape(shown))
    console_for_tables(250).print(table)


def model_name(case: dict[str, Any]) -> str:
    """A stored case's model as show and the report name it: the hub id the user gave, else the
    file's general.name, else the file name (analysis/summary.py summarize_case)."""
    info = (case.get("info") or {}).get("model") or {}
    return case.get("hub_repo") or info.get("model_name") or Path(str(case.get("model") or "")).name


def print_presets() -> None:
    from edgebench.models.presets import PRESETS, preset_n_params

    headers = ("preset", "arch", "layers", "hidden", "heads", "kv", "hdim", "ffn", "vocab", "tied", "ctx",
               "M params", "KV KiB/tok")  # short: the table fits 120 columns (kv heads, head dim, f16 cache)
    cells = [[p.name, p.arch, str(p.n_layer), str(p.n_embd), str(p.n_head), str(p.n_head_kv), str(p.head_dim),
              str(p.n_ff), str(p.n_vocab), "yes" if p.tied else "no", str(p.n_ctx_train),
              f"{preset_n_params(p) / 1e6:.1f}", f"{p.kv_bytes_per_token_f16 / 1024:.1f}"] for p in PRESETS.values()]
    print_fitted("synthetic presets (shapes from public config.json files)", headers, cells,
                 ("preset", "arch", "tied"), console_for_tables(150))


def print_fitted(title: str, headers: tuple[str, ...], cells: list[list[str]], left: tuple[str, ...],
                 console: Console) -> None:
    """A compact table whose every value and header is whole, or, when the console is too narrow
    for it, one line per row: "NAME: header value, header value"."""
    from rich import box

    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for h in headers:
        table.add_column(h, justify="left" if h in left else "right", no_wrap=True)
    for r in cells:
        table.add_row(*r)
    probe = Console(width=10_000, file=io.StringIO())  # its natural width, measured by rendering it
    probe.print(table)
    if max(len(line.rstrip()) for line in probe.file.getvalue().splitlines()) <= console.width:
        console.print(table)
        return
    console.print(title, style="italic")
    for r in cells:
        console.print(f"{r[0]}: " + ", ".join(f"{h} {v}" for h, v in zip(headers[1:], r[1:])), soft_wrap=True)


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
    from edgebench.machine.profiles import get_profile
    from edgebench.present.device_view import print_device as show

    show(get_profile(name), console_for_tables(120))


def print_detect() -> None:
    from edgebench.machine.profiles import describe_evidence, detect, probe

    ev = probe()
    prof = detect(ev)
    Console().print(f"this machine is [bold]{prof.name}[/bold] ({describe_evidence(ev)})")
