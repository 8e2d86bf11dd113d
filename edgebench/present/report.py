"""A report of one or more stored runs: summary.csv, PNG figures, a self-contained index.html
(figures embedded as data URIs, CSS inline, no scripts) and report.md (figures as files).

Sections appear only when their data is there: a sweep over prompt lengths gives the TTFT figure,
op samples give the op shares, power samples the energy, a device profile with a memory bandwidth
the decode roofline, a quality pass the Pareto figures and the quality table. Reads the store only; never imports a backend.
"""

from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path
from typing import Any

from edgebench.analysis import quality, summary
from edgebench.errors import InputError
from edgebench.present import devices, ops_side, pareto, plots
from edgebench.present import format as format_
from edgebench.records import KEY_FIELDS, SUMMARY_COLUMNS
from edgebench.store import bundle

# Section id -> (title, what it shows and how to read it).
SECTIONS: dict[str, tuple[str, str]] = {
    "throughput": ("Throughput vs bits per weight",
                   "Prefill and decode tokens per second at each quantization level, one line per model / backend / "
                   "device. Decode on edge devices is usually memory-bound, so fewer bits per weight should mean more "
                   "tokens per second."),
    "prompt": ("Time to first token vs prompt length", "TTFT (one prefill over the whole prompt) and prefill throughput."),
    "depth": ("Decode vs context depth", "Decode throughput and median per-token latency with tokens already in the KV cache."),
    "latency": ("Per-token latency", "Percentiles of the timed decode steps of each rep, median over reps: a long p99 "
                                     "tail means jitter."),
    "memory": ("Memory", "What the runtime allocated: weights, KV cache (for the whole context) and compute buffers; the "
                         "black mark is the worker's peak resident memory. The label gives the KV cache's share."),
    "kv_share": ("KV cache share vs context", "How the KV cache grows with the context size, in bytes and as a share of "
                                              "weights + KV + compute."),
    "ops": ("Op time shares", "Time per op class from the ops profiler's own reps (never mixed into the throughput "
                              "numbers). mul_mat_vec is a matrix-vector product: the decode bottleneck."),
    "energy": ("Energy per token", "Energy integrated over each phase window, divided by the tokens of the phase."),
    "roofline": ("Decode roofline", "Each decode step reads every weight once plus the KV cache so far, so memory bandwidth "
                                    "bounds decode at bandwidth / bytes per token. The percentage is how close the run came. "
                                    "Bandwidth is the device profile's spec figure, or, for profiles without one, "
                                    "a copy benchmark measured at the start of the run."),
    "pareto_speed": ("Speed vs quality", "Decode throughput of each level against its mean KL divergence from the "
                                         "reference level (log scale). The line is the Pareto front: the levels no "
                                         "other level beats on both speed and quality; the circle marks its knee, "
                                         "where more speed starts to cost much more quality."),
    "pareto_memory": ("Memory vs quality", "Memory each level needs (weights + KV cache + compute buffers, or the "
                                           "peak RSS) against its mean KL divergence, with the Pareto front and its knee."),
    "quality": ("Output quality", "Each level's next-token distributions against the reference level's on the same "
                                  "tokens, computed as llama.cpp's llama-perplexity computes them: KLD is the KL divergence "
                                  "KL(reference || level) in nats per token (mean ± its error, median, p99, max; 0 means "
                                  "identical), same top is how often both pick the same most likely token (± binomial "
                                  "error), RMS Δp the root mean square change in the probability of the actual next "
                                  "token, PPL the level's perplexity on the text and PPL ratio its perplexity over the "
                                  "reference's (1 = no loss; ± accounts for the correlation of the two). No level can be "
                                  "more accurate than the file it was made from."),
}
FIGURES = plots.FIGURES + pareto.FIGURES
QUALITY_TABLE = ("kld_mean", "kld_mean_err", "kld_median", "kld_p99", "kld_max", "same_top_p", "same_top_p_err",
                 "delta_p_rms", "ppl", "ppl_ref", "ppl_ratio", "ppl_ratio_err", "quality_tokens", "quality_note")

# Columns of the summary table (headers and formats: records.FIELDS); key columns that never vary
# go to the header line.
TABLE: tuple[str, ...] = (
    "run_id", "device", "model", "backend", "quant", "bpw", "n_threads", "n_gpu_layers", "n_prompt", "n_gen",
    "depth", "n_ctx", "prefill_tok_s", "prefill_tok_s_std", "ttft_ms", "decode_tok_s", "decode_tok_s_std",
    "tpot_ms_p50", "tpot_ms_p99", "weights_bytes", "kv_bytes", "compute_bytes", "kv_share", "rss_peak_bytes",
    "j_per_token_decode", "roof_pct", "kld_mean", "kld_p99", "same_top_p", "delta_p_rms", "ppl", "ppl_ratio",
    "quality_note", "status",
)
ALWAYS = {"model", "quant", "status"}


# -- data ---------------------------------------------------------------------------------------
def _bandwidth_gbs(run, cache: dict[tuple, float | None]) -> float | None:
    """Peak DRAM bandwidth (GB/s) of the run's device, in its recorded power mode when known."""
    mode = (run.env or {}).get("nvpmodel_mode")
    if (run.device, mode) not in cache:
        try:
            from edgebench.machine.profiles import get_profile

            profile = get_profile(run.device)
            by_mode = getattr(profile, "bandwidth_gbs", None)
            cache[run.device, mode] = by_mode(mode) if callable(by_mode) else profile.mem_bandwidth_gbs
        except Exception:  # an unknown device (or none installed): no roofline for it, the rest stands
            cache[run.device, mode] = None
    # No spec figure (generic CPUs): the bandwidth measured at the start of the run, if any.
    return cache[run.device, mode] or (run.env or {}).get("measured_mem_bandwidth_gbs")


def _roofline(row: dict[str, Any], bw_gbs: float | None) -> dict[str, Any]:
    # Each weight read once a token: weights_bytes counts every tensor once (llama.cpp: llama_model_size,
    # the CPU_REPACK copy is repack_bytes, not read twice). Runs stored before that added the repacked
    # copy to weights_bytes: the model's size bounds them.
    known = [float(x) for x in (row.get("weights_bytes"), row.get("model_bytes")) if x and x == x]
    weights = min(known) if known else None
    if not bw_gbs or not weights or not row.get("decode_tok_s"):
        return {}
    # The average decode step reads the cache half-way through the positions the steps covered
    # (a tg test's from the depth, a pg test's after the prompt); llama.cpp's KV bytes per position
    # are its allocated bytes over its context.
    first, last = (int(x) for x in str(row.get("decode_pos") or "0-0").split("-"))
    per_pos = (row.get("kv_bytes") or 0.0) / row["n_ctx"] if row.get("n_ctx") else 0.0
    kv_read = per_pos * (first + last + 1) / 2
    per_token = float(weights) + kv_read
    bound = bw_gbs * 1e9 / per_token
    return {"mem_bandwidth_gbs": bw_gbs, "bytes_per_token": per_token, "bound_tok_s": bound,
            "roof_pct": row["decode_tok_s"] / bound}


def _op_shares(s) -> dict[str, dict[str, float]]:
    """Corrected op-class shares per phase for the op figure (the summary columns come from stats)."""
    if not (s["metric"] == "op_ns").any():
        return {}
    from edgebench.analysis.ops import class_shares

    return class_shares(s, corrected=True) or {}


def collect(store, run_ids: list[str]):
    """(runs, case table as a DataFrame, notes): summary rows of every case plus derived columns."""
    import pandas as pd

    from edgebench.analysis.energy import telemetry_gap

    runs, rows, notes, bw = [], [], set(), {}
    for rid in run_ids:
        run = store.get_run(rid)
        runs.append(run)
        samples = store.get_samples(run.run_id)
        for case in store.get_cases(run.run_id):
            s = samples[samples["case_id"] == case["case_id"]]
            row = summary.summarize_case(run.run_id, run.device, case, s, run.verified)
            gap = telemetry_gap(case, s)
            if gap:
                notes.add(f"run {run.run_id}: {gap}")
            if row.get("status") == "ok":
                row["op_shares"] = _op_shares(s)
                row.update(_roofline(row, _bandwidth_gbs(run, bw)))
                if row.get("throttled"):
                    notes.add(f"run {run.run_id} case {row['case_id']} ({row.get('model')} {row.get('quant')}) was "
                              f"throttled while measured: its numbers understate the device")
            rows.append(row)
    # a run interrupted before its first case still gets a (nearly empty) report
    return runs, pd.DataFrame(rows) if rows else pd.DataFrame(columns=list(SUMMARY_COLUMNS)), sorted(notes)


# -- output -------------------------------------------------------------------------------------
def _table_columns(df) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Columns worth a table column, and 'field value' facts that are the same for every case."""
    cols, constant = [], []
    for col in TABLE:
        if col not in df or not df[col].notna().any():
            continue
        head = format_.header(col)
        if col in KEY_FIELDS + ("run_id",) and col not in ALWAYS and df[col].astype(str).nunique() == 1:
            constant.append(f"{head} {format_.cell(col, df[col].iloc[0])}")
            continue
        cols.append((col, head, format_.fmt_of(col)))
    return cols, constant


def _figures(df, fig_dir: Path) -> dict[str, Path]:
    ok = df[df["status"] == "ok"].reset_index(drop=True) if "status" in df else df
    out = {}
    if ok.empty:
        return out
    fig_dir.mkdir(parents=True, exist_ok=True)
    for sid, make in FIGURES:
        fig = make(ok)
        if fig is not None:
            path = fig_dir / f"{sid}.png"
            fig.savefig(path, dpi=110)
            out[sid] = path
    return out


def _md(s: Any) -> str:
    """Text for Markdown: renderers pass raw HTML through, so '<' and '&' are escaped too."""
    return html.escape(str(s), quote=False).replace("|", "\\|")


_CSS = """
body{font:15px/1.5 -apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:#222;margin:0;background:#fafafa}
main{max-width:1140px;margin:0 auto;padding:24px 32px;background:#fff}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;margin:32px 0 6px;border-bottom:1px solid #ddd;padding-bottom:4px}
p.lead{color:#555;margin:4px 0 12px} .facts{color:#444;font-size:13px}
img{max-width:100%;height:auto;display:block;margin:8px 0}
table{border-collapse:collapse;font-size:12.5px;margin:8px 0;display:block;overflow-x:auto}
th,td{padding:3px 8px;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
th{background:#f0f3f7;position:sticky;top:0} td.t,th.t{text-align:left}
.failed{color:#b00020} .warn{background:#fff6e0;border-left:4px solid #f0a000;padding:6px 10px;margin:6px 0;font-size:13px}
.warn ul{margin:4px 0;padding-left:20px}
nav a{margin-right:12px;font-size:13px}
"""


def _html_table(df, cols) -> str:
    head = "".join(f'<th class="{"t" if not f else ""}">{html.escape(h)}</th>' for _, h, f in cols)
    body = []
    for _, r in df.iterrows():
        tds = "".join(f'<td class="{"t" if not f else ""}">{html.escape(format_.value(r.get(c), f))}</td>' for c, _, f in cols)
        body.append(f'<tr class="{"failed" if r.get("status") == "failed" else ""}">{tds}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _md_table(df, cols) -> str:
    lines = ["| " + " | ".join(_md(h) for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_md(format_.value(r.get(c), f)) for c, _, f in cols) + " |" for _, r in df.iterrows()]
    return "\n".join(lines)


def _roof_table(df):
    df = df[df["roof_pct"].notna()]
    df = df.assign(case=plots.labels(df, always=("model", "quant")))
    # this table's own headers for two columns: next to the bound they read as "achieved" and "of bound"
    heads = {"decode_tok_s": "achieved tok/s", "roof_pct": "% of bound"}
    cols = [("case", "case", "")] + [(c, heads.get(c) or format_.header(c), format_.fmt_of(c)) for c in
                                     ("bytes_per_token", "mem_bandwidth_gbs", "bound_tok_s", "decode_tok_s", "roof_pct")]
    return df, cols


def _quality_table(df):
    df = df[df["kld_mean"].notna()]
    df = df.assign(case=plots.labels(df, always=("model", "quant")))
    cols = [("case", "case", "")] + [(c, format_.header(c), format_.fmt_of(c)) for c in QUALITY_TABLE
                                     if c in df and df[c].notna().any()]
    return df, cols


def max_kld_lines(df, max_kld: float | None) -> list[str]:
    """'fastest level under KLD X on DEVICE: ...' per device / backend / model group."""
    if max_kld is None or "kld_mean" not in df or not df["kld_mean"].notna().any():
        return []
    out = []
    for (device, backend, model), row in quality.fastest_by_group(df.to_dict("records"), max_kld).items():
        where = f"fastest level under KLD {max_kld:g} on {device} ({model}, {backend})"
        if row is None:
            out.append(f"{where}: none (no level with a decode speed has a mean KLD <= {max_kld:g})")
        else:
            out.append(f"{where}: {row.get('quant')} at {format_.with_unit('decode_tok_s', row.get('decode_tok_s'))} "
                       f"decode, mean KLD {format_.cell('kld_mean', row.get('kld_mean'))}, same top "
                       f"{format_.cell('same_top_p', row.get('same_top_p'))}")
    return out


def _extra_lead(sid: str, df) -> str:
    """A data-dependent sentence for a section (e.g. what profiling cost)."""
    if sid == "ops" and "ops_overhead_pct" in df and df["ops_overhead_pct"].notna().any():
        lo, hi = df["ops_overhead_pct"].min(), df["ops_overhead_pct"].max()
        span = f"{lo:+.0f}%" if round(lo) == round(hi) else f"{lo:+.0f}% to {hi:+.0f}%"
        return f"Tracing changed the profiled reps' wall time by {span} against the plain reps; " + _correction_note(df)
    if sid in ("pareto_speed", "pareto_memory", "quality") and "quality_note" in df and df["quality_note"].notna().any():
        return f"Some levels have random weights (synthetic presets): {quality.SYNTHETIC_NOTE}."
    if sid == "energy" and "throttled" in df and (df["throttled"] == True).any():  # noqa: E712 (None/NaN are not True)
        return "Some cases were throttled while measured (see the warnings)."
    return ""


def _correction_note(df) -> str:
    """What the op shares are: launch-corrected (and how much the correction clipped) only where a
    launch probe ran (llama.cpp), raw where there is none (ONNX Runtime)."""
    probed = df["op_launch_ns_decode"].notna() | df["op_launch_ns_prefill"].notna() if "op_launch_ns_decode" in df else None
    if probed is None or not probed.any():
        return "shares are raw traced time (no launch probe for this runtime: nothing corrected)."
    clip = [c for c in ("ops_clipped_pct_prefill", "ops_clipped_pct_decode") if c in df and df[c].notna().any()]
    worst = max(float(df[c].max()) for c in clip) if clip else None
    text = "shares are corrected for the per-node launch cost (measured per thread count ggml uses for the node)"
    text += f"; the correction clipped at most {worst:.1f}% of a phase's traced time." if worst is not None else "."
    if not probed.all():
        text += " Cases without a launch probe (ONNX Runtime) show raw shares."
    return text


def _runs_facts(runs, df) -> list[str]:
    out = []
    for run in runs:
        cases = df[df["run_id"] == run.run_id]
        ok = int((cases["status"] == "ok").sum()) if len(cases) else 0
        env = run.env or {}
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created_at))
        bits = [f"run {run.run_id}", f"device {run.device_shown}", when, f"{run.status}", f"{ok}/{len(cases)} cases ok"]
        bits += [f"{k} {env[k]}" for k in ("cpu_model", "os", "edgebench") if env.get(k)]
        out.append(" · ".join(str(b) for b in bits))
    return out


def write_report(store, run_ids: list[str], out_dir: Path, max_kld: float | None = None) -> Path:
    """Write summary.csv, figures/*.png, index.html and report.md into ``out_dir``; returns the
    path of index.html. ``max_kld`` (else the first run spec's max_kld) names the fastest level
    under that mean KLD. Blocks while matplotlib draws (about a second per figure)."""
    if max_kld is not None and not max_kld >= 0:  # NaN too; 0 names the reference itself
        raise InputError(f"--max-kld must be >= 0, got {max_kld}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs, df, notes = collect(store, run_ids)
    rows = [{k: v for k, v in r.items() if k != "op_shares"} for r in df.to_dict("records")]
    bundle.write_csv(out_dir / "summary.csv", [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                                                for k, v in r.items()} for r in rows])
    figs = _figures(df, out_dir / "figures")
    cols, constant = _table_columns(df)
    warnings = summary.cv_warnings(df[df["status"] == "ok"].to_dict("records")) + notes if len(df) else notes
    failed = [f"run {r['run_id']} case {r['case_id']} ({format_.value(r.get('model'), '')} {format_.value(r.get('quant'), '')}): "
              f"{r.get('error')}" for r in df.to_dict("records") if r.get("status") == "failed"]
    title = "edgebench report: " + ", ".join(sorted({str(r.run_id) for r in runs}))
    sections = [(sid, *SECTIONS[sid], figs[sid]) for sid, _ in FIGURES if sid in figs]
    if max_kld is None:
        max_kld = next((r.spec.get("max_kld") for r in runs if (r.spec or {}).get("max_kld") is not None), None)
    if "kld_mean" in df and df["kld_mean"].notna().any():
        sections.append(("quality", *SECTIONS["quality"], None))
    verdicts = max_kld_lines(df, max_kld)
    if len(df) and devices.applies(runs):  # runs from several devices: side by side, a bar per device
        sections += [("devices", devices.TITLE, devices.LEAD, None)] + [
            (p.stem, f"{devices.TITLE}: {format_.header(p.stem[len('devices_'):])}", "", p)
            for p in devices.figures(df, runs, out_dir / "figures")]
    if len(df) and ops_side.applies(df):  # op shares from two runtimes: ms per token per class, side by side
        sections.append(("ops_side", ops_side.TITLE, ops_side.LEAD, ops_side.figure(df, out_dir / "figures")))
    _write_html(out_dir / "index.html", title, runs, df, cols, constant, warnings, failed, sections, verdicts)
    _write_md(out_dir / "report.md", title, runs, df, cols, constant, warnings, failed, sections, verdicts)
    return out_dir / "index.html"


def _write_html(path, title, runs, df, cols, constant, warnings, failed, sections, verdicts=()) -> None:
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>",
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_CSS}</style></head><body><main>",
             f"<h1>{e(title)}</h1>"]
    parts += [f"<p class='facts'>{e(f)}</p>" for f in _runs_facts(runs, df)]
    if sections:
        parts.append("<nav>" + "".join(f"<a href='#{sid}'>{e(t)}</a>" for sid, t, _, _ in sections)
                     + "<a href='#summary'>Summary table</a></nav>")
    parts += [f"<p class='lead'><b>{e(v)}</b></p>" for v in verdicts]
    parts += [f"<div class='warn failed'>failed: {e(f)}</div>" for f in failed]
    if warnings:  # one box: a noisy sweep can warn about every case
        items = "".join(f"<li>{e(w)}</li>" for w in warnings)
        parts.append(f"<details class='warn'{' open' if len(warnings) <= 3 else ''}><summary>{len(warnings)} "
                     f"warning(s)</summary><ul>{items}</ul></details>")
    for sid, t, lead, png in sections:
        lead = f"{lead} {_extra_lead(sid, df)}".strip()
        parts.append(f"<section id='{sid}'><h2>{e(t)}</h2><p class='lead'>{e(lead)}</p>")
        if png is not None:
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(f"<img alt='{e(t)}' src='data:image/png;base64,{data}'>")
        if sid == "roofline":
            parts.append(_html_table(*_roof_table(df)))
        if sid == "devices":
            parts.append(_html_table(*devices.table(df, runs)))
        if sid == "ops_side":
            parts.append(_html_table(*ops_side.table(df)))
        if sid == "quality":
            parts += [f"<p class='lead'><b>{e(v)}</b></p>" for v in verdicts]
            parts.append(_html_table(*_quality_table(df)))
        parts.append("</section>")
    parts.append("<section id='summary'><h2>Summary table</h2>")
    if constant:
        parts.append(f"<p class='lead'>Every case: {e(', '.join(constant))}.</p>")
    parts.append(_html_table(df, cols) + "</section></main></body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def _write_md(path, title, runs, df, cols, constant, warnings, failed, sections, verdicts=()) -> None:
    lines = [f"# {_md(title)}", ""] + [f"- {_md(f)}" for f in _runs_facts(runs, df)] + [""]
    lines += [f"**{_md(v)}**\n" for v in verdicts]
    lines += [f"> **warning:** {_md(w)}\n" for w in warnings] + [f"> **failed:** {_md(f)}\n" for f in failed]
    for sid, t, lead, png in sections:
        lines += [f"## {t}", "", _md(f"{lead} {_extra_lead(sid, df)}".strip()), ""]
        if png is not None:
            lines += [f"![{t}](figures/{png.name})", ""]
        if sid == "roofline":
            lines += [_md_table(*_roof_table(df)), ""]
        if sid == "devices":
            lines += [_md_table(*devices.table(df, runs)), ""]
        if sid == "ops_side":
            lines += [_md_table(*ops_side.table(df)), ""]
        if sid == "quality":
            lines += [f"**{_md(v)}**\n" for v in verdicts] + [_md_table(*_quality_table(df)), ""]
    lines += ["## Summary table", ""] + ([f"Every case: {_md(', '.join(constant))}.", ""] if constant else [])
    lines += [_md_table(df, cols), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
