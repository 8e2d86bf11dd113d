"""The report's figures: one function per figure, each taking the report's case table (a pandas
DataFrame of summary rows plus derived columns) and returning a matplotlib Figure, or None when the
data for it is not there.

Figures are made with ``matplotlib.figure.Figure`` (no pyplot: no global state, nothing leaks between
reports, and PNGs are drawn by the Agg renderer whatever backend the process has). Constrained
layout and legends outside the axes keep labels from overlapping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edgebench.present import format as format_
from edgebench.records import LABEL_FIELDS, case_label

OP_COLORS = {"mul_mat_vec": "#1f77b4", "mul_mat": "#aec7e8", "attention": "#ff7f0e", "norm": "#2ca02c",
             "rope": "#98df8a", "activation": "#d62728", "elementwise": "#9467bd", "copy": "#8c564b",
             "other": "#c7c7c7"}
MEM_COLORS = {"weights": "#4c72b0", "KV cache": "#dd8452", "compute": "#55a868"}
WIDTH = 10.0  # inches; at 110 dpi the PNGs fit a 1100 px page column


def text(s: Any) -> str:
    """A string for matplotlib: '$' would start mathtext, so model names with one are escaped."""
    return str(s).replace("$", r"\$")


def ctx_is_derived(df) -> bool:
    """True when n_ctx follows from the other key fields (depth + prompt + gen, padded), as it does
    unless --ctx was swept on its own."""
    if "n_ctx" not in df or df["n_ctx"].nunique() <= 1:
        return True
    others = [df[f].astype(str) for f in LABEL_FIELDS if f in df and f != "n_ctx"]
    return bool(df.groupby(others)["n_ctx"].nunique().max() <= 1)


def label_fields(df, exclude: Sequence[str] = ()) -> list[str]:
    """Key fields that vary between the rows of ``df`` (and so must appear in labels), less ``exclude``."""
    fields = [f for f in LABEL_FIELDS if f in df and f not in exclude and df[f].astype(str).nunique() > 1]
    if "n_ctx" in fields and not set(exclude) & {"n_prompt", "n_gen", "depth"} and ctx_is_derived(df):
        fields.remove("n_ctx")  # p= and d= already name the case; ctx= would only repeat them
    if "run_id" in fields and "device" in fields and df["run_id"].nunique() == df["device"].nunique() \
            and df.groupby("run_id")["device"].nunique().max() == 1:
        fields.remove("run_id")  # one run per device: the device names the run
    return fields


def labels(df, exclude: Sequence[str] = (), always: Sequence[str] = ("model",)) -> list[str]:
    varying = label_fields(df, exclude)
    fields = [f for f in LABEL_FIELDS if (f in always and f not in exclude) or f in varying]
    return [case_label(r, fields) for r in df.to_dict("records")]


def _figure(height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, height), dpi=110, layout="constrained")
    return fig


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "linear":
            axis.set_major_formatter(FuncFormatter(format_.tick))
    ax.spines[["top", "right"]].set_visible(False)


def _legend(fig, ax, max_cols: int = 3) -> None:
    """A legend under the panels, with as many columns as the longest entry leaves room for."""
    handles, names = ax.get_legend_handles_labels()
    if not handles:
        return
    names = [n if len(n) <= 90 else n[:87] + "..." for n in names]
    chars_per_row = WIDTH * 110 / 6.2 - 10  # ~6 px per character at 8 pt and 110 dpi
    cols = max(1, min(max_cols, len(names), int(chars_per_row // (max(map(len, names)) + 8))))
    fig.legend(handles, names, loc="outside lower center", ncols=cols, fontsize=8, frameon=False)


def _line_style(i: int, n: int) -> dict[str, Any]:
    """Distinct colours for up to 20 lines (tab10, then tab20), then dashed and dotted repeats."""
    from matplotlib import colormaps

    if n <= 10:
        return {"color": colormaps["tab10"](i % 10)}
    return {"color": colormaps["tab20"](i % 20), "ls": ("-", "--", ":")[(i // 20) % 3]}


def _lines(df, x: str, ys: Sequence[tuple[str, str, str]], xlabel: str, title: str, exclude: Sequence[str],
           annotate: str | None = None, logx: bool = False):
    """Line panels (one per (column, panel title, y label)), one line per series of ``df``."""
    df = df.dropna(subset=[x])
    ys = [y for y in ys if y[0] in df and df[y[0]].notna().any()]
    if df.empty or not ys:
        return None
    if ctx_is_derived(df):  # a derived context would split each line into one-point series
        exclude = (*exclude, "n_ctx")
    df = df.assign(_series=labels(df, exclude=exclude))
    series = list(dict.fromkeys(df["_series"]))
    fig = _figure(3.6 + 0.22 * ((len(series) + 2) // 3))
    axes = fig.subplots(1, len(ys), squeeze=False)[0]
    fig.suptitle(title, fontsize=12, fontweight="bold")
    for ax, (col, panel, ylabel) in zip(axes, ys):
        for i, name in enumerate(series):
            s = df[(df["_series"] == name) & df[col].notna()].sort_values(x)
            if s.empty:
                continue
            err = s.get(f"{col}_std")
            ax.errorbar(s[x], s[col], yerr=err if err is not None and err.notna().all() else None, marker="o",
                        ms=5, capsize=3, lw=1.6, label=text(name), **_line_style(i, len(series)))
        if logx and df[x].min() > 0 and df[x].max() / df[x].min() >= 8:
            ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0, top=ax.get_ylim()[1] * 1.08)
        _style(ax, panel, xlabel, ylabel)
        if annotate:  # name the x positions on a top axis (e.g. quant names at their bits per weight)
            ticks = df.groupby(annotate)[x].mean().sort_values()
            top = ax.secondary_xaxis("top")
            top.set_xticks(list(ticks), [text(t) for t in ticks.index], fontsize=7, rotation=45, ha="left")
            top.tick_params(length=2, pad=1)
        if logx:
            from matplotlib.ticker import FuncFormatter

            ax.set_xticks(sorted(df[x].unique()))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:,.0f}"))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _p: ""))
            ax.tick_params(axis="x", labelrotation=30)
    _legend(fig, axes[0])
    return fig


def throughput_vs_bpw(df):
    return _lines(df[df["bpw"].notna()] if "bpw" in df else df.iloc[0:0], "bpw",
                  [("prefill_tok_s", "Prefill", "tokens / s"), ("decode_tok_s", "Decode", "tokens / s")],
                  "bits per weight", "Throughput vs quantization (mean ± std over reps)", ("quant",), annotate="quant")


def _swept(df, field: str) -> bool:
    return field in df and df[field].nunique() > 1


def ttft_vs_prompt(df):
    if not _swept(df, "n_prompt"):
        return None
    return _lines(df, "n_prompt", [("ttft_ms", "Time to first token", "ms"), ("prefill_tok_s", "Prefill", "tokens / s")],
                  "prompt length (tokens)", "Prefill vs prompt length", ("n_prompt",), logx=True)


def decode_vs_depth(df):
    if not _swept(df, "depth"):
        return None
    return _lines(df, "depth", [("decode_tok_s", "Decode", "tokens / s"), ("tpot_ms_p50", "Per-token latency p50", "ms")],
                  "tokens already in the KV cache (depth)", "Decode vs context depth", ("depth",))


def kv_share_vs_ctx(df):
    if not _swept(df, "n_ctx") or "kv_share" not in df:
        return None
    d = df.dropna(subset=["kv_share"]).assign(kv_share_pct=lambda t: 100 * t["kv_share"],
                                              kv_mib=lambda t: t["kv_bytes"] / 2**20)
    d = d.drop_duplicates(subset=[f for f in LABEL_FIELDS if f in d and f not in ("n_prompt", "n_gen", "depth")])
    return _lines(d, "n_ctx", [("kv_share_pct", "KV share of runtime memory", "% of weights + KV + compute"),
                               ("kv_mib", "KV cache size", "MiB")],
                  "context size (tokens)", "KV cache vs context", ("n_ctx", "n_prompt", "n_gen", "depth"), logx=True)


def _hbars(df, panels: Sequence[tuple[str, Callable, str]], title: str, exclude: Sequence[str] = (),
           legend_cols: int = 3):
    """Horizontal bar panels, one row per case. Each panel: (title, draw(ax, y, rows), x label)."""
    names = [text(n) for n in labels(df, exclude=exclude, always=("model", "quant"))]
    n = len(names)
    fig = _figure(1.5 + 0.34 * n)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)[0]
    fig.suptitle(title, fontsize=12, fontweight="bold")
    y = list(range(n))
    for ax, (panel, draw, xlabel) in zip(axes, panels):
        draw(ax, y, df)
        _style(ax, panel, xlabel, "")
        ax.grid(True, axis="x", alpha=0.3)
        ax.grid(False, axis="y")
        ax.set_yticks(y, names, fontsize=8)
        ax.set_ylim(n - 0.5, -0.5)  # first case on top; set, not inverted: shared axes would flip twice
    _legend(fig, axes[0], legend_cols)
    return fig


LOG_LATENCY_SPREAD = 10.0  # largest p99 / smallest p50 from which the latency axis is logarithmic


def latency_percentiles(df):
    d = df.dropna(subset=["tpot_ms_p50"])
    if d.empty:
        return None

    # a p99 far above the p50s (a stall, a throttled case) would flatten every other bar: log scale
    log = bool(d["tpot_ms_p50"].min() > 0 and d["tpot_ms_p99"].max() / d["tpot_ms_p50"].min() >= LOG_LATENCY_SPREAD)

    def draw(ax, y, rows):
        h = 0.26
        for i, (p, shade) in enumerate((("p50", "#4c72b0"), ("p90", "#8da0cb"), ("p99", "#c6d0e6"))):
            ax.barh([v + (i - 1) * h for v in y], rows[f"tpot_ms_{p}"], height=h, color=shade, label=p)
        if log:
            ax.set_xscale("log")
    return _hbars(d, [("Decode step time percentiles (each rep's, median over reps)", draw,
                       "ms per token" + (" (log scale)" if log else ""))], "Per-token decode latency")


def memory_bars(df):
    d = df.dropna(subset=["weights_bytes"])
    if d.empty:
        return None
    d = d.drop_duplicates(subset=[f for f in LABEL_FIELDS if f in d and f not in ("n_prompt", "n_gen", "depth")])

    def draw(ax, y, rows):
        left = [0.0] * len(rows)
        for col, name in (("weights_bytes", "weights"), ("kv_bytes", "KV cache"), ("compute_bytes", "compute")):
            vals = [(v or 0) / 2**20 if v == v else 0 for v in rows[col]] if col in rows else [0] * len(rows)
            ax.barh(y, vals, left=left, color=MEM_COLORS[name], label=name, height=0.6)
            left = [a + b for a, b in zip(left, vals)]
        rss = [(v or 0) / 2**20 if v == v else 0 for v in rows["rss_peak_bytes"]] if "rss_peak_bytes" in rows else []
        if any(rss):
            ax.plot(rss, y, "k|", ms=14, mew=2, label="process peak RSS")
        ends = [max(a, b) for a, b in zip(left, rss or left)]  # label after the bar or the RSS mark
        for yi, end, share in zip(y, ends, rows.get("kv_share", [None] * len(rows))):
            if share is not None and share == share:
                ax.annotate(f"  KV {format_.cell('kv_share', share)}", (end, yi), va="center", fontsize=7)
        ax.set_xlim(right=max(ends) * 1.18)
    return _hbars(d, [("Runtime buffers (stacked) and peak RSS", draw, "MiB")], "Memory by quantization",
                  exclude=("n_prompt", "n_gen", "depth"), legend_cols=4)


def op_shares(df):
    d = df[df["op_shares"].map(bool)] if "op_shares" in df else df.iloc[0:0]
    if d.empty:
        return None
    classes = [c for c in OP_COLORS if any(c in (s.get(ph) or {}) for s in d["op_shares"] for ph in s)]
    phases = [ph for ph in ("prefill", "decode") if any(s.get(ph) for s in d["op_shares"])]

    def drawer(phase):
        def draw(ax, y, rows):
            left = [0.0] * len(rows)
            for c in classes:
                vals = [100 * float((s.get(phase) or {}).get(c, 0) or 0) for s in rows["op_shares"]]
                ax.barh(y, vals, left=left, color=OP_COLORS[c], label=c, height=0.6)
                for yi, l0, v in zip(y, left, vals):
                    if v >= 8:
                        ax.annotate(f"{v:.0f}%", (l0 + v / 2, yi), ha="center", va="center", fontsize=7,
                                    color="white" if c in ("mul_mat_vec", "attention", "activation", "elementwise", "copy") else "black")
                left = [a + b for a, b in zip(left, vals)]
            ax.set_xlim(0, 100)
        return draw
    return _hbars(d, [(f"{ph.capitalize()}", drawer(ph), "% of op time") for ph in phases],
                  "Where the time goes: share of op time by class", legend_cols=5)


def energy_per_token(df):
    cols = [c for c in ("j_per_token_prefill", "j_per_token_decode") if c in df and df[c].notna().any()]
    d = df.dropna(subset=cols, how="all") if cols else df.iloc[0:0]
    if d.empty:
        return None

    def drawer(col, color):
        def draw(ax, y, rows):
            ax.barh(y, rows[col].fillna(0) * 1e3, color=color, height=0.6)
            for yi, v in zip(y, rows[col]):
                if v == v:
                    ax.annotate(f" {format_.cell(col, v)}", (v * 1e3, yi), va="center", fontsize=7)
            ax.set_xlim(right=float(rows[col].max()) * 1e3 * 1.18)
        return draw
    return _hbars(d, [(c.split("_")[-1].capitalize(), drawer(c, "#c44e52" if "decode" in c else "#dd8452"),
                       "mJ per token") for c in cols], "Energy per token")


def roofline(df):
    d = df.dropna(subset=["roof_pct"]) if "roof_pct" in df else df.iloc[0:0]
    if d.empty:
        return None

    def draw(ax, y, rows):
        ax.barh(y, rows["bound_tok_s"], color="#e5e5e5", edgecolor="#999999", hatch="//", height=0.7,
                label="bound = memory bandwidth / bytes read per token (weights + KV cache)")
        ax.barh(y, rows["decode_tok_s"], color="#4c72b0", height=0.45, label="achieved decode")
        for yi, a, pct in zip(y, rows["decode_tok_s"], rows["roof_pct"]):
            ax.annotate(f" {format_.cell('roof_pct', pct)} of bound", (a, yi), va="center", fontsize=8)
        ax.set_xlim(right=float(rows["bound_tok_s"].max()) * 1.1)
    bw = ", ".join(f"{dev} {v:g} GB/s" for dev, v in d.groupby("device")["mem_bandwidth_gbs"].first().items())
    fig = _hbars(d, [("", draw, "decode tokens / s")],
                 text(f"Decode roofline: achieved vs memory-bandwidth bound\nmemory bandwidth: {bw}"))
    return fig


# In report order: (section id, figure function).
FIGURES: tuple[tuple[str, Callable], ...] = (
    ("throughput", throughput_vs_bpw), ("prompt", ttft_vs_prompt), ("depth", decode_vs_depth),
    ("latency", latency_percentiles), ("memory", memory_bars), ("kv_share", kv_share_vs_ctx),
    ("ops", op_shares), ("energy", energy_per_token), ("roofline", roofline),
)
