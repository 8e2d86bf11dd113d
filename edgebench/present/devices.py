"""The report across devices (runs from more than one board, e.g. one fleet run): a device x level
table and one figure per metric with a bar per device, levels on the x axis.

A device is the fleet host when the run came through `edgebench fleet` (two Orin NX boards are two
devices), else the run's device profile."""

from __future__ import annotations

from pathlib import Path

from edgebench.present import format as format_

METRICS = ("decode_tok_s", "ttft_ms", "rss_peak_bytes", "j_per_token_decode")
TITLE = "Across devices"
LEAD = ("The same sweep on each device: decode tok/s, time to first token, peak memory and energy per decoded "
        "token (where measured), one bar per device at each level.")


def device_labels(runs) -> dict[str, str]:
    """run_id -> the device it stands for in the report."""
    out = {}
    for r in runs:
        host = ((r.env or {}).get("fleet") or {}).get("host")
        out[r.run_id] = f"{host} ({r.device})" if host else str(r.device)
    return out


def applies(runs) -> bool:
    return len(set(device_labels(runs).values())) > 1


def table(df, runs):
    """(rows as a DataFrame, [(column, header, format)]): one row per device and level (model quant)."""
    labels = device_labels(runs)
    ok = df[df["status"] == "ok"] if "status" in df else df
    ok = ok.assign(device_name=ok["run_id"].map(labels),
                   level=ok["model"].astype(str) + " " + ok["quant"].astype(str))
    metrics = [m for m in METRICS if m in ok and ok[m].notna().any()]
    keys = [k for k in ("n_prompt", "n_gen", "depth", "n_threads") if k in ok and ok[k].astype(str).nunique() > 1]
    rows = ok.groupby(["device_name", "level", *keys], sort=True, dropna=False)[metrics].mean().reset_index()
    cols = [("device_name", "device", ""), ("level", "level", "")] + [(k, format_.header(k), format_.fmt_of(k)) for k in keys]
    cols += [(m, format_.header(m), format_.fmt_of(m)) for m in metrics]
    return rows, cols


def figures(df, runs, fig_dir: Path) -> list[Path]:
    """One PNG per metric: levels on x, a bar per device (mean over the level's cases)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows, cols = table(df, runs)
    if rows.empty:
        return []
    fig_dir.mkdir(parents=True, exist_ok=True)
    devices, levels = sorted(rows["device_name"].unique()), sorted(rows["level"].unique())
    out = []
    for m in [c for c, _, _ in cols if c in METRICS]:
        per = rows.groupby(["device_name", "level"])[m].mean()
        fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(levels) * max(1, len(devices)) / 2), 4))
        width = 0.8 / len(devices)
        x = np.arange(len(levels))
        for i, d in enumerate(devices):
            ax.bar(x + i * width - 0.4 + width / 2, [per.get((d, lv), np.nan) for lv in levels], width, label=d)
        ax.set_xticks(x, levels, rotation=20, ha="right")
        ax.set_ylabel(format_.header(m))
        ax.set_title(f"{format_.header(m)} by device")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = fig_dir / f"devices_{m}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        out.append(path)
    return out
