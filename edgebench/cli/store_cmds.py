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
    fmt: str = typer.Option("table", "--format", "-f", help="table|csv|json|md|llama-bench (llama-bench's markdown table)"),
    out: str = typer.Option(str(DEFAULT_OUT), "--out", "-o", "--store", help="Output folder holding edgebench.db, or a database URL."),
) -> None:
    """Print a stored run's summary.

    Example: edgebench show latest --format llama-bench"""
    from edgebench.analysis import summary
    from edgebench.present import tables
    from edgebench.store.database import Store

    formats = (*tables.FORMATS, "llama-bench")
    if fmt not in formats:
        raise InputError(f"--format must be one of {', '.join(formats)}, got {fmt!r}")
    store = Store(out, create=False)
    run = store.get_run(run_id)
    if fmt == "llama-bench":
        from edgebench.present import llama_bench_view

        sys.stdout.write(llama_bench_view.render(store, run.run_id))
        return
    rows = summary.summarize_run(store, run.run_id)
    tables.print_rows(rows, fmt, title=f"run {run.run_id} on {run.device_shown} ({run.status})")


@app.command()
def runs(
    out: str = typer.Option(str(DEFAULT_OUT), "--out", "-o", "--store", help="Output folder or database URL."),
    by_device: bool = typer.Option(False, "--by-device", help="One row per device (profile and fleet host): which runs it has."),
) -> None:
    """List stored runs."""
    from edgebench.present import tables
    from edgebench.store.database import Store

    if by_device:
        from edgebench.present import fleet_view

        fleet_view.print_runs_by_device(Store(out, create=False))
        return
    tables.print_runs(Store(out, create=False))


@app.command()
def export(
    run_id: str = typer.Argument("latest", help="Run id (or a unique prefix), or 'latest'."),
    out: str = typer.Option(str(DEFAULT_OUT), "--out", "-o", "--store", help="Output folder holding edgebench.db, or a database URL."),
    fmt: str = typer.Option("csv", "--format", "-f", help="csv (the run folder: run.json, summary.csv, samples.csv) or parquet (summary.parquet, samples.parquet)."),
    dest: Optional[Path] = typer.Option(None, "--dest", "-d", help="Folder to write into (default: the run's folder beside the store)."),
) -> None:
    """(Re)write a run's files: its folder as CSV, or Parquet with typed columns.

    Example: edgebench export latest --format parquet --dest /tmp/run"""
    from edgebench.analysis.summary import export_run, summarize_run
    from edgebench.store.database import Store

    if fmt not in ("csv", "parquet"):
        raise InputError(f"--format must be one of csv, parquet, got {fmt!r}")
    store = Store(out, create=False)
    run = store.get_run(run_id)
    run_dir = dest or _run_dir(store, out, run.run_id)
    if fmt == "parquet":
        from edgebench.store.parquet import write_parquet

        for path in write_parquet(summarize_run(store, run.run_id), store.get_samples(run.run_id), run_dir):
            typer.echo(str(path))
        return
    export_run(store, run.run_id, run_dir)
    typer.echo(str(run_dir))


def _run_dir(store, out: str, run_id: str) -> Path:
    """A run's folder: beside the SQLite file, or under ./reports for a server database."""
    base = Path(store.url[len("sqlite:///"):]).parent if store.url.startswith("sqlite:///") else DEFAULT_OUT
    return base / run_id


@app.command()
def ingest(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders (run.json + samples.csv) from other devices, or llama-bench result files (-o json, jsonl, sql, csv)."),
    out: str = typer.Option(str(DEFAULT_OUT), "--out", "-o", "--store", help="Store to load them into (folder or database URL)."),
    device: str = typer.Option("auto", "--device", help="Device of imported llama-bench results (auto: this host's profile when llama-bench's CPU is this CPU)."),
    replace: bool = typer.Option(False, "--replace", help="Replace a stored run even when the folder has fewer finished cases (an older copy)."),
) -> None:
    """Load run folders into a store (idempotent by run id): how a fleet's results come home.
    llama-bench result files become runs marked as imported from llama-bench.

    Example: edgebench ingest results.json --store reports"""
    from edgebench.store.bundle import ingest_bundle
    from edgebench.store.database import Store
    from edgebench.store.llama_bench import is_llama_bench_file

    store = Store(out)
    for d in run_dirs:
        if is_llama_bench_file(d):
            from edgebench.run.llama_bench_import import ingest_file

            run_id, n = ingest_file(store, d, device)
            typer.echo(f"{run_id}: {n} case(s) from {d} (llama-bench)")
            continue
        run_id, n = ingest_bundle(store, d, replace=replace)
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
    baseline: Optional[str] = typer.Argument(None, help="Run id in --store, a run folder, or a summary/samples CSV (with --baseline-dir: the CANDIDATE)."),
    candidate: Optional[str] = typer.Argument(None, help="The same kinds as BASELINE."),
    baseline_dir: Optional[Path] = typer.Option(None, "--baseline-dir", help="baselines/<device>/ run folders: compare each device of CANDIDATE (a fleet id, run id or run folder) with its own class's baseline."),
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
    if baseline_dir is not None:
        raise typer.Exit(_compare_by_device(baseline_dir, candidate or baseline, store, opts, fmt))
    if baseline is None or candidate is None:
        raise InputError("compare needs BASELINE and CANDIDATE (or --baseline-dir DIR CANDIDATE)")
    res = cmp.compare(baseline, candidate, store, opts)
    _print_compare(res, fmt)
    raise typer.Exit(res.exit_code)


def _print_compare(res, fmt: str) -> None:
    from edgebench.present import compare_view

    if fmt == "table":
        from edgebench.present.tables import console_for_tables

        compare_view.print_table(res, console_for_tables(140))
    else:
        sys.stdout.write(compare_view.render(res, fmt))
    for w in res.warnings:
        typer.echo(f"edgebench: warning: {w}", err=True)


def _compare_by_device(base_dir: Path, candidate: Optional[str], store: str, opts, fmt: str) -> int:
    from edgebench.analysis import baselines

    if candidate is None:
        raise InputError("compare --baseline-dir DIR needs a CANDIDATE (a fleet id, run id or run folder)")
    verdicts = baselines.compare_by_device(base_dir, candidate, store, opts)
    for v in verdicts:
        typer.echo(f"== {v.device}: {v.candidate} against {v.baseline}", err=True)
        _print_compare(v.result, fmt)
    return baselines.exit_code(verdicts)
