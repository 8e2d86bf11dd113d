"""How a comparison reads: a rich table, Markdown, JSON or CSV (edgebench.analysis.compare computes it)."""

from __future__ import annotations

from edgebench.analysis.compare import Result, Row
from edgebench.present import format as format_

FORMATS = ("table", "md", "json", "csv")
_COLUMNS = ("case", "metric", "baseline", "candidate", "ratio", "change", "CI", "p", "q", "verdict")
_COLOR = {"regression": "bold red", "inconclusive": "bold magenta", "improved": "green", "insignificant": "yellow",
          "ok": "", "missing": "magenta"}


def _p(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}" if v >= 0.001 else f"{v:.1e}"


def _cells(r: Row) -> list[str]:
    if r.status != "ok":  # a baseline case that did not succeed in the candidate
        reason = r.reason if len(r.reason) <= 60 else r.reason[:59] + "…"
        return [r.label, r.metric, "ok", f"{r.status}: {reason}" if reason else r.status,
                "-", "-", "-", "-", "-", r.verdict]
    ci = "-" if r.ci_low is None else f"[{r.ci_low:.3f}, {r.ci_high:.3f}]"
    p = {"exact": "exact", "none": "n/a"}.get(r.test) or _p(r.p_value)
    return [r.label, r.metric, format_.with_unit(r.metric, r.baseline),
            format_.with_unit(r.metric, r.candidate), f"{r.ratio:.3f}",
            f"{r.change:+.1%}", ci, p, _p(r.p_adjusted) if r.p_value is not None else "-", r.verdict]


def summary_line(res: Result) -> str:
    c = res.counts()
    thr = f"threshold {res.options.threshold:.0%}" + (
        "".join(f", {k} {v:.0%}" for k, v in res.options.fail_on.items()))
    lost = len(res.not_ok)
    cases = (f" ({lost} of them a case missing, failed or skipped in the candidate)"
             if lost and not res.options.allow_missing else "")
    allowed = f", {c['missing']} missing (allowed)" if c["missing"] else ""
    return (f"{c['regression']} regression(s){cases}, {c['inconclusive']} inconclusive, {c['improved']} improved, "
            f"{c['insignificant']} insignificant, {c['ok']} ok{allowed} ({thr}; alpha {res.options.alpha:g}, false "
            f"discovery rate controlled across the {res.tested} tested rows (Benjamini-Hochberg q); "
            f"tok/s: higher is better; ms, bytes, J: lower)")


def render(res: Result, fmt: str) -> str:
    """The comparison as Markdown, JSON or CSV text ('table' is drawn by print_table)."""
    if fmt == "json":
        import json

        doc = {"baseline": res.baseline, "candidate": res.candidate, "counts": res.counts(),
               "regressions": res.regressions, "inconclusive": res.inconclusive, "exit_code": res.exit_code,
               "fdr": "benjamini-hochberg", "alpha": res.options.alpha, "summary": summary_line(res),
               "warnings": res.warnings, "rows": [r.to_dict() for r in res.rows]}
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        dicts = [r.to_dict() for r in res.rows]
        w = csv.DictWriter(buf, fieldnames=list(dicts[0]))
        w.writeheader()
        w.writerows(dicts)
        return buf.getvalue()
    lines = [f"**{res.baseline}** (baseline) vs **{res.candidate}** (candidate)", "",
             "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for r in res.rows:
        cells = [c.replace("|", "\\|") for c in _cells(r)]
        cells[-1] = f"**{cells[-1]}**" if r.verdict in ("regression", "inconclusive") else cells[-1]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", summary_line(res)] + [f"- warning: {w}" for w in res.warnings]
    return "\n".join(lines) + "\n"


def print_table(res: Result, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{escape(res.baseline)} (baseline) vs {escape(res.candidate)} (candidate)")
    for c in _COLUMNS:
        table.add_column(c, justify="left" if c in ("case", "metric", "verdict") else "right")
    for r in res.rows:
        cells = [escape(c) for c in _cells(r)]
        if _COLOR[r.verdict]:
            cells[-1] = f"[{_COLOR[r.verdict]}]{cells[-1]}[/]"
        table.add_row(*cells)
    console.print(table)
    console.print(summary_line(res))
