"""The report's quality figures: speed and memory of each level against its mean KL divergence
from the reference level, one point per level, the Pareto front drawn and its knee marked."""

from __future__ import annotations

from edgebench.present.plots import _figure, _legend, _line_style, _style, labels, text


def pareto_front(x, y, maximize_y: bool) -> list[int]:
    """Indices of the Pareto-optimal points (x lower is better; y higher when ``maximize_y``, else
    lower), ordered by x: no other point is at least as good on both and better on one."""
    order = sorted(range(len(x)), key=lambda i: (x[i], -y[i] if maximize_y else y[i]))
    front, best = [], None
    for i in order:
        v = y[i] if maximize_y else -y[i]
        if best is None or v > best:
            front.append(i)
            best = v
    return front


def knee(x, y, front: list[int], logx: bool = True) -> int | None:
    """The front's knee: the point farthest from the straight line joining its two ends, both axes
    scaled to [0, 1] (x on a log scale when ``logx``); None for fronts of fewer than three points."""
    import math

    if len(front) < 3:
        return None
    fx = [math.log10(x[i]) if logx else x[i] for i in front]
    fy = [y[i] for i in front]
    sx, sy = (max(fx) - min(fx)) or 1.0, (max(fy) - min(fy)) or 1.0
    px = [(v - min(fx)) / sx for v in fx]
    py = [(v - min(fy)) / sy for v in fy]
    dx, dy = px[-1] - px[0], py[-1] - py[0]
    norm = math.hypot(dx, dy) or 1.0
    dist = [abs(dy * (a - px[0]) - dx * (b - py[0])) / norm for a, b in zip(px, py)]
    j = max(range(1, len(front) - 1), key=lambda k: dist[k])
    return front[j] if dist[j] > 0 else None


def _memory_column(df) -> tuple[str, str] | None:
    """(column, axis label) of the memory a level needs: weights + KV + compute where the runtime
    reported them, else the process peak RSS."""
    if "weights_bytes" in df and df["weights_bytes"].notna().any():
        return "_mem", "weights + KV cache + compute (MiB)"
    if "rss_peak_bytes" in df and df["rss_peak_bytes"].notna().any():
        return "rss_peak_bytes", "peak RSS (MiB)"
    return None


def _pareto(df, ycol: str, ylabel: str, title: str, maximize: bool, scale: float = 1.0):
    """One point per level: mean KLD (log x) against ``ycol``, one series per device / backend /
    model; the Pareto front drawn and its knee marked. A KLD of 0 (the reference itself) sits at
    the left edge, marked as the reference."""
    if "kld_mean" not in df or ycol not in df:
        return None
    d = df.dropna(subset=["kld_mean", ycol])
    if d.empty:
        return None
    d = d.assign(_series=labels(d, exclude=("quant",)))
    positive = d.loc[d["kld_mean"] > 0, "kld_mean"]
    floor = float(positive.min()) / 3 if len(positive) else 1e-4
    fig = _figure(4.4 + 0.22 * ((d["_series"].nunique() + 2) // 3))
    ax = fig.subplots()
    fig.suptitle(title, fontsize=12, fontweight="bold")
    series = list(dict.fromkeys(d["_series"]))
    for si, name in enumerate(series):
        s = d[d["_series"] == name]
        x = [max(float(v), floor) for v in s["kld_mean"]]
        y = [float(v) * scale for v in s[ycol]]
        quants = [text(q) for q in s.get("quant", [""] * len(s))]
        style = _line_style(si, len(series))
        ax.scatter(x, y, s=28, alpha=0.55, color=style["color"], label=text(name))
        front = pareto_front(x, y, maximize)
        ax.plot([x[i] for i in front], [y[i] for i in front], "-", lw=1.4, color=style["color"])
        for xi, yi, qn, kv in zip(x, y, quants, s["kld_mean"]):
            ax.annotate(f" {qn}" + (" (reference)" if kv <= 0 else ""), (xi, yi), fontsize=7)
        k = knee(x, y, front)
        if k is not None:
            ax.scatter([x[k]], [y[k]], s=160, facecolors="none", edgecolors="black", lw=1.5,
                       label="knee of the front" if si == 0 else None)
    ax.set_xscale("log")
    edge = "; KLD 0 drawn at the left edge" if (d["kld_mean"] <= 0).any() else ""
    _style(ax, "", f"mean KL divergence vs the reference (nats, log scale; lower is better{edge})", ylabel)
    _legend(fig, ax)
    return fig


def pareto_speed(df):
    return _pareto(df, "decode_tok_s", "decode tokens / s (higher is better)",
                   "Speed vs quality: decode throughput against mean KLD, per level", True)


def pareto_memory(df):
    mem = _memory_column(df)
    if mem is None:
        return None
    col, label = mem
    if col == "_mem":
        df = df.assign(_mem=df[["weights_bytes", "kv_bytes", "compute_bytes"]
                               if "kv_bytes" in df and "compute_bytes" in df else ["weights_bytes"]].sum(axis=1, min_count=1))
    return _pareto(df, col, label + " (lower is better)", "Memory vs quality: memory against mean KLD, per level",
                   False, 1 / 2**20)


FIGURES = (("pareto_speed", pareto_speed), ("pareto_memory", pareto_memory))
