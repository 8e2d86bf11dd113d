"""Commands over stored results: show, runs, export, ingest, report, compare."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from edgebench.cli.app import DEFAULT_OUT, app
from edgebench.errors import InputError


@app.command()
def show(
    run_id: str = typer.Argument("latest", help="Run id (or a unique prefix), or 'latest'."),
    fmt: str = typer.Option("table", "--format", "-f", help="table|csv|json|md"),
    out: str = typer.Option(str(DEFAULT_OUT), "--out", "-o", "--store", help="Output folder holding edgebench.db, or a database URL."),
) -> None:
    """Print a stored run's summary."""
    from edgebench.analysis import summary
    from edgebench.present import tables
    from edgebench.store.database import Store

    if fmt not in tables.FORMATS:
        raise InputError(f"--format must be one of {', '.join(tables.FORMATS)}, got {fmt!r}")
    store = Store(out, create=False)
    run = store.get_run(run_id)
    rows = summary.summarize_run(store, run.run_id)
    tables.print_rows(rows, fmt, title=f"run {run.run_id} on {run.device} ({run.status})")


@app.command()
def runs(out: str = typer.Option(str(DEFAULT_OUT), "--out", "-o", "--store", help="Output folder or database URL.")) -> None:
    """List stored runs."""
    from edgebench.present import tables
    from edgebench.store.database import Store

    tables.print_runs(Store(out, create=False))


@app.command()
def export(
    run_id: str = typer.Argument("latest"),
    out: str = typer.Option(str(DEFAULT_OUT), "--out", "-o", "--store"),
) -> None:
    """(Re)write a run's folder: run.json, summary.csv, samples.csv."""
    from edgebench.analysis.summary import export_run
    from edgebench.store.database import Store

    store = Store(out, create=False)
    run = store.get_run(run_id)
    run_dir = _run_dir(store, out, run.run_id)
    export_run(store, run.run_id, run_dir)
    typer.echo(str(run_dir))


def _run_dir(store, out: str, run_id: str) -> Path:
    """A run's folder: beside the SQLite file, or under ./reports for a server database."""
    base = Path(store.url[len("sqlite:///"):]).parent if store.url.startswith("sqlite:///") else DEFAULT_OUT
    return base / run_id


@app.command()
def ingest(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders (run.json + samples.csv) from other devices."),
    out: str = typer.Option(str(DEFAULT_OUT), "--out", "-o", "--store", help="Store to load them into (folder or database URL)."),
) -> None:
    """Load run folders into a store (idempotent by run id): how a fleet's results come home."""
    from edgebench.store.bundle import ingest_bundle
    from edgebench.store.database import Store

    store = Store(out)
    for d in run_dirs:
        run_id, n = ingest_bundle(store, d)
        typer.echo(f"{run_id}: {n} case(s) from {d}")


@app.command()
def report(
    run_ids: Optional[list[str]] = typer.Argument(None, help="Run ids (or unique prefixes); default: the latest run."),
    store: str = typer.Option(str(DEFAULT_OUT), "--store", "-s", help="Folder holding edgebench.db, or a database URL."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report folder (default: the run's folder next to the store, or report-<time> there for several runs)."),
    max_kld: Optional[float] = typer.Option(None, "--max-kld", help="Name the fastest level whose mean KLD is at most this (default: the run's --max-kld)."),
) -> None:
    """Write summary.csv, PNG figures, a self-contained index.html and report.md for one or more runs."""
    import time

    from edgebench.present import report as report_mod
    from edgebench.store.database import Store

    st = Store(store, create=False)  # str, not Path: a Path would fold the '//' of a database URL
    runs_ = [st.get_run(r) for r in (run_ids or ["latest"])]
    if out is None:
        base = DEFAULT_OUT if "://" in store else Path(store)
        out = base / (runs_[0].run_id if len(runs_) == 1 else time.strftime("report-%Y%m%d-%H%M%S"))
    typer.echo(str(report_mod.write_report(st, [r.run_id for r in runs_], out, max_kld=max_kld)))


@app.command()
def compare(
    baseline: str = typer.Argument(..., help="Run id in --store, a run folder, or a summary/samples CSV."),
    candidate: str = typer.Argument(..., help="The same kinds as BASELINE."),
    store: str = typer.Option(str(DEFAULT_OUT), "--store", "-s", help="Folder holding edgebench.db, or a database URL."),
    threshold: str = typer.Option("5%", "--threshold", help="A change smaller than this is ok (e.g. 5% or 0.05)."),
    fail_on: Optional[str] = typer.Option(None, "--fail-on", help="Per-metric thresholds, e.g. decode_tok_s:3%,rss_peak_bytes:10%."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level of the Mann-Whitney U test."),
    match: Optional[str] = typer.Option(None, "--match", help="Key fields left out of the join, e.g. 'model' to compare two models."),
    metrics: Optional[str] = typer.Option(None, "--metrics", help="Comma list of metrics (default: throughput, tpot p50, memory, energy where present)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table|md|json|csv"),
    force: bool = typer.Option(False, "--force", help="Compare results from different devices."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="A baseline case missing, failed or skipped in CANDIDATE is no regression."),
) -> None:
    """Compare CANDIDATE with BASELINE case by case; exit 3 on a regression, 4 when inconclusive."""
    from edgebench.analysis import compare as cmp
    from edgebench.present import compare_view

    if fmt not in compare_view.FORMATS:
        raise InputError(f"--format must be one of {', '.join(compare_view.FORMATS)}, got {fmt!r}")
    if not 0 < alpha < 1:
        raise InputError(f"--alpha must be between 0 and 1, got {alpha}")
    opts = cmp.Options(threshold=cmp.parse_fraction(threshold), fail_on=cmp.parse_fail_on(fail_on), alpha=alpha,
                       match=cmp.check_match(match), force=force, allow_missing=allow_missing,
                       metrics=tuple(cmp.metric_spec(m.strip()).name for m in (metrics or "").split(",") if m.strip()))
    res = cmp.compare(baseline, candidate, store, opts)
    if fmt == "table":
        from edgebench.present.tables import console_for_tables

        compare_view.print_table(res, console_for_tables(140))
    else:
        sys.stdout.write(compare_view.render(res, fmt))
    for w in res.warnings:
        typer.echo(f"edgebench: warning: {w}", err=True)
    raise typer.Exit(res.exit_code)
