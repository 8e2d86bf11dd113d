"""Where the time goes in each runtime, side by side: op classes of llama.cpp and ONNX Runtime (and
any other backend in the report) for the same model and levels, prefill and decode.

Shares alone cannot say why one runtime is slower, so each class is shown as milliseconds per
token: its share of the traced op time (corrected, analysis.ops.class_shares) times the case's
plain, untraced time per token (1000 / prefill_tok_s, 1000 / decode_tok_s). The classes of a
phase then sum to the phase's measured time per token. The ops profiler's timings are never mixed
into the throughput: they only split it.
"""

from __future__ import annotations

from pathlib import Path

from edgebench.records import OP_CLASSES

TITLE = "Op classes, runtime by runtime"
LEAD = ("Milliseconds per token spent in each op class (its share of the ops profiler's time x the plain time "
        "per token), one column / bar per backend and level. A class that is larger in one runtime is where "
        "it loses: e.g. an int4 level whose decode mul_mat_vec takes as long as fp32's has a dequantizing kernel "
        "that gains nothing from reading fewer bytes on this CPU.")
_PHASES = (("prefill", "prefill_tok_s"), ("decode", "decode_tok_s"))


def _ok(df):
    if "op_shares" not in df or "backend" not in df:
        return df.iloc[0:0]
    ok = df[df["status"] == "ok"] if "status" in df else df
    return ok[ok["op_shares"].map(bool)]


def applies(df) -> bool:
    """True when op shares were measured for more than one backend."""
    return _ok(df)["backend"].nunique() > 1


def ms_per_token(df) -> dict[str, dict[tuple[str, str], float]]:
    """{level label: {(phase, op_class): ms per token}}, the mean over a level's cases."""
    ok = _ok(df)
    several_models = ok["model"].astype(str).nunique() > 1 if "model" in ok else False
    sums: dict[str, dict[tuple[str, str], list[float]]] = {}
    for r in ok.to_dict("records"):
        label = f"{r['backend']} {r['quant']}" + (f" ({r['model']})" if several_models else "")
        per = sums.setdefault(label, {})
        for phase, tok_s in _PHASES:
            speed = r.get(tok_s)
            shares = (r["op_shares"] or {}).get(phase) or {}
            if not speed or speed != speed:  # no such phase in the case, or NaN
                continue
            for cls, share in shares.items():
                per.setdefault((phase, cls), []).append(float(share) * 1000.0 / float(speed))
    return {lv: {k: sum(v) / len(v) for k, v in per.items()} for lv, per in sorted(sums.items())}


def table(df):
    """(rows as a DataFrame, [(column, header, format)]): a row per (phase, op class), a column per level."""
    import pandas as pd

    data = ms_per_token(df)
    levels = list(data)
    rows = []
    for phase, _ in _PHASES:
        totals = {lv: sum(v for (ph, _), v in data[lv].items() if ph == phase) for lv in levels}
        for cls in OP_CLASSES:
            vals = {lv: data[lv].get((phase, cls)) for lv in levels}
            if all(v is None for v in vals.values()):
                continue
            rows.append({"phase": phase, "op_class": cls, **{
                lv: "-" if v is None else f"{v:.3f} ({v / totals[lv]:.0%})" for lv, v in vals.items()}})
    cols = [("phase", "phase", ""), ("op_class", "op class", "")] + [(lv, f"{lv} ms/token", "") for lv in levels]
    return pd.DataFrame(rows), cols


def figure(df, fig_dir: Path) -> Path | None:
    """ops_side.png: a panel per phase, op classes on y, a bar per level (ms per token)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = ms_per_token(df)
    phases = [ph for ph, _ in _PHASES if any(ph == k[0] for per in data.values() for k in per)]
    if not data or not phases:
        return None
    classes = [c for c in OP_CLASSES if any(c == k[1] for per in data.values() for k in per)]
    levels = list(data)
    fig, axes = plt.subplots(1, len(phases), figsize=(10.0, min(8.0, 2.0 + 0.12 * len(classes) * len(levels))),
                             squeeze=False)
    height = 0.8 / len(levels)
    y = np.arange(len(classes))
    for ax, phase in zip(axes[0], phases):
        for i, lv in enumerate(levels):
            ax.barh(y - 0.4 + height * (i + 0.5), [data[lv].get((phase, c), 0.0) for c in classes], height, label=lv)
        ax.set_yticks(y, classes)
        ax.invert_yaxis()
        ax.set_xlabel("ms per token")
        ax.set_title(phase.capitalize())
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Op classes by runtime and level")
    fig.tight_layout()
    fig_dir.mkdir(parents=True, exist_ok=True)
    path = fig_dir / "ops_side.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
