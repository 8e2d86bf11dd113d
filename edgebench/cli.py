"""The `edgebench` command. Thin: parses, calls library functions, returns an exit code.

Exit codes: 0 all good; 1 some case failed (the rest was measured and stored); 2 bad input or
usage (one line on stderr, nothing run); 3 a regression was found by compare; 4 compare found a
change past the threshold it could not decide (inconclusive); 130 interrupted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from edgebench.errors import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, InputError
from edgebench.run.spec import QUALITY_HELP, SWEEP_HELP

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Benchmark small language models on edge devices: prefill, decode, memory, ops.")
models_app = typer.Typer(help="Synthetic models with the shapes of public SLMs.", pretty_exceptions_enable=False)
app.add_typer(models_app, name="models")

DEFAULT_OUT = Path("reports")


def _err(msg: str) -> None:
    typer.echo(f"edgebench: error: {msg}", err=True)


# Quality options, shared by `run --quality` and `quality` (a fresh OptionInfo for each command).
def _q(flag: str):
    return typer.Option(None, flag, help=QUALITY_HELP[flag])


def _s(name: str, *flags: str):  # a sweep flag of `run`: repeatable, each a comma list
    return typer.Option(None, *flags, help=SWEEP_HELP[name] + " Repeatable; comma lists work.")


@app.command()
def run(
    model: Optional[list[str]] = typer.Option(None, "--model", "-m", help="GGUF/ONNX file, folder of models, or preset name (repeatable; comma lists work)."),
    quant: Optional[str] = typer.Option(None, "--quant", "-q", help="Quant levels for presets, e.g. Q4_K_M,Q8_0 (default: the ladder)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="llama-cpp, onnxruntime, onnxruntime-genai (comma list)."),
    n_prompt: Optional[list[str]] = _s("n_prompt", "-p", "--n-prompt"),
    n_gen: Optional[list[str]] = _s("n_gen", "-n", "--n-gen"),
    depth: Optional[list[str]] = _s("depth", "-d", "--depth"),
    reps: Optional[int] = typer.Option(None, "-r", "--reps", help="Repetitions (default 5)."),
    threads: Optional[list[str]] = _s("threads", "-t", "--threads"),
    ctx: Optional[list[str]] = _s("ctx", "--ctx"),
    batch: Optional[list[str]] = _s("batch", "-b", "--batch"),
    ubatch: Optional[list[str]] = _s("ubatch", "-ub", "--ubatch"),
    n_gpu_layers: Optional[list[str]] = _s("n_gpu_layers", "-ngl", "--n-gpu-layers"),
    flash_attn: Optional[list[str]] = _s("flash_attn", "-fa", "--flash-attn"),
    cache_type_k: Optional[list[str]] = _s("cache_type_k", "-ctk", "--cache-type-k"),
    cache_type_v: Optional[list[str]] = _s("cache_type_v", "-ctv", "--cache-type-v"),
    ep: Optional[list[str]] = _s("ep", "--ep"),
    graph_opt: Optional[list[str]] = _s("graph_opt", "--graph-opt"),
    profile: Optional[str] = typer.Option(None, "--profile", help="Extra profilers: ops, telemetry."),
    device: Optional[str] = typer.Option(None, "--device", help="Device profile name or 'auto'."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Run even if this machine is not --device."),
    cooldown: Optional[float] = typer.Option(None, "--cooldown", help="Seconds to wait between cases."),
    cooldown_temp: Optional[float] = typer.Option(None, "--cooldown-temp", help="Wait between cases until below this temperature (C)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Per-case timeout in seconds (default 900)."),
    no_warmup: bool = typer.Option(False, "--no-warmup", help="Skip the warmup run."),
    config: Optional[Path] = typer.Option(None, "--config", help="sweep.toml with the same options."),
    out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help="Output folder (store + run folders)."),
    store: Optional[str] = typer.Option(None, "--store", help="Results database URL (default: OUT/edgebench.db), e.g. postgresql://host/db for a fleet."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Finish a partial run (RUN_ID)."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write the HTML/Markdown report."),
    quality: bool = typer.Option(False, "--quality", help="Also score each level's output against the reference level (KLD, same top, PPL)."),
    quality_ctx: Optional[int] = _q("--quality-ctx"),
    quality_chunks: Optional[int] = _q("--quality-chunks"),
    text: Optional[str] = _q("--text"),
    quality_ref: Optional[str] = _q("--quality-ref"),
    quality_seed: Optional[int] = _q("--quality-seed"),
    quality_top_k: Optional[int] = _q("--quality-top-k"),
    max_kld: Optional[float] = _q("--max-kld"),
) -> None:
    """Measure models and store every raw sample. With no options: the smollm-135m preset over the default quant ladder at a quick size."""
    from edgebench.run import session

    if resume:
        raise typer.Exit(_present_run(session.resume(resume, out, store_target=store), report=not no_report))
    options = dict(
        models=[m for arg in (model or []) for m in arg.split(",")] or None, quants=quant, backends=backend, reps=reps,
        n_prompt=n_prompt, n_gen=n_gen, depth=depth, threads=threads, ctx=ctx, batch=batch, ubatch=ubatch,
        n_gpu_layers=n_gpu_layers, flash_attn=flash_attn, cache_type_k=cache_type_k, cache_type_v=cache_type_v, ep=ep,
        graph_opt=graph_opt, profile=profile, device=device, timeout=timeout, cooldown=cooldown, cooldown_temp=cooldown_temp,
        verify=False if no_verify else None, warmup=False if no_warmup else None, quality=quality or None,
        quality_ctx=quality_ctx, quality_chunks=quality_chunks, quality_text=text, quality_ref=quality_ref,
        quality_seed=quality_seed, quality_top_k=quality_top_k, max_kld=max_kld)
    raise typer.Exit(_present_run(session.start(options, config, out, store_target=store), report=not no_report))


@app.command("quality")
def quality_cmd(
    model: list[str] = typer.Argument(..., help="GGUF/ONNX files, folders or presets (comma lists work)."),
    quant: Optional[str] = typer.Option(None, "--quant", "-q", help="Levels of a preset or of a GGUF file (requantized)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="llama-cpp, onnxruntime (comma list)."),
    threads: Optional[str] = typer.Option(None, "-t", "--threads", help="Threads (default: physical cores)."),
    n_gpu_layers: Optional[str] = typer.Option(None, "-ngl", "--n-gpu-layers", help="Layers on the GPU (default 99)."),
    cache_type_k: Optional[str] = typer.Option(None, "-ctk", "--cache-type-k", help="f16|q8_0|q4_0 ..."),
    cache_type_v: Optional[str] = typer.Option(None, "-ctv", "--cache-type-v", help="f16|q8_0|q4_0 ..."),
    quality_ctx: Optional[int] = _q("--quality-ctx"),
    quality_chunks: Optional[int] = _q("--quality-chunks"),
    text: Optional[str] = _q("--text"),
    quality_ref: Optional[str] = _q("--quality-ref"),
    quality_seed: Optional[int] = _q("--quality-seed"),
    quality_top_k: Optional[int] = _q("--quality-top-k"),
    max_kld: Optional[float] = _q("--max-kld"),
    device: Optional[str] = typer.Option(None, "--device", help="Device profile name or 'auto'."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Run even if this machine is not --device."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Per-case timeout in seconds (default 900)."),
    out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", help="Output folder (store + run folders)."),
    store: Optional[str] = typer.Option(None, "--store", help="Results database URL (default: OUT/edgebench.db)."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write the HTML/Markdown report."),
) -> None:
    """Score each level against the reference level (KLD, same top, PPL) without the speed reps."""
    from edgebench.run import session

    options = dict(models=[m for arg in model for m in arg.split(",")], quants=quant, backends=backend, threads=threads,
                   n_gpu_layers=n_gpu_layers, cache_type_k=cache_type_k, cache_type_v=cache_type_v, device=device,
                   timeout=timeout, verify=False if no_verify else None, speed=False, quality=True, quality_ctx=quality_ctx,
                   quality_chunks=quality_chunks, quality_text=text, quality_ref=quality_ref, quality_seed=quality_seed, quality_top_k=quality_top_k,
                   max_kld=max_kld)
    raise typer.Exit(_present_run(session.start(options, None, out, store_target=store), report=not no_report))


def _present_run(outcome, report: bool) -> int:
    """After a run: the summary table, noise warnings, the report; returns the run's exit code."""
    if outcome.code == EXIT_INTERRUPTED:
        return outcome.code
    from rich.console import Console

    from edgebench.analysis.summary import cv_warnings
    from edgebench.present import tables

    console = Console(stderr=True)
    tables.print_rows(outcome.rows, "table", title=f"run {outcome.run_id} ({outcome.elapsed_s:.0f} s)")
    for w in cv_warnings(outcome.rows):
        console.print(f"[yellow]warning:[/yellow] {w}")
    if report:
        from edgebench.present import report as report_mod

        try:
            console.print(f"report: {report_mod.write_report(outcome.store, [outcome.run_id], outcome.run_dir)}")
        except Exception as e:  # a report problem must never lose the measured run
            console.print(f"[yellow]warning:[/yellow] report not written: {type(e).__name__}: {e}")
    console.print(f"stored in {outcome.store.url}; run folder {outcome.run_dir}")
    return outcome.code


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


@models_app.command("list")
def models_list() -> None:
    """Presets with their shapes and parameter counts."""
    from edgebench.present import tables

    tables.print_presets()


@models_app.command("make")
def models_make(
    preset: Optional[str] = typer.Argument(None, help="Preset name (see `edgebench models list`)."),
    quant: str = typer.Option("F16", "--quant", "-q", help="Comma list of quant levels."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder (default: the cache, $EDGEBENCH_HOME)."),
    backend: str = typer.Option("llama-cpp", "--backend", help="llama-cpp (GGUF), onnxruntime (ONNX) or onnxruntime-genai (genai folder)."),
    source: Optional[Path] = typer.Option(None, "--from", help="Requantize this GGUF file (real weights) instead of building a preset."),
) -> None:
    """Write a synthetic model, or a GGUF of your own requantized (--from), at one or more quant levels."""
    from edgebench.run.make import make_models, make_requantized

    if source is not None:
        if preset is not None:
            raise InputError(f"give a preset or --from FILE, not both (got {preset!r} and {source})")
        make_requantized(source, quant, out, backend)
    elif preset is None:
        raise InputError("name a preset (see `edgebench models list`) or give --from FILE.gguf")
    else:
        make_models(preset, quant, out, backend)


@models_app.command("inspect")
def models_inspect(path: Path = typer.Argument(..., help="A .gguf file.")) -> None:
    """Architecture, shapes, quant types per tensor group, bits per weight, size, context length."""
    from edgebench.present import tables

    tables.print_gguf_info(path)


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


devices_app = typer.Typer(help="Device profiles: what a device is and what a fair run needs.", pretty_exceptions_enable=False)
app.add_typer(devices_app, name="devices")


@devices_app.command("list")
def devices_list() -> None:
    """Known device profiles."""
    from edgebench.present import tables

    tables.print_devices()


@devices_app.command("show")
def devices_show(name: str = typer.Argument(..., help="Profile name or alias, e.g. jetson-orin.")) -> None:
    """One profile with its numbers and their sources."""
    from edgebench.present import tables

    tables.print_device(name)


@devices_app.command("detect")
def devices_detect() -> None:
    """What this machine is, and the evidence."""
    from edgebench.present import tables

    tables.print_detect()


@app.command()
def memory(
    model: str = typer.Argument(..., help="A .gguf file or a preset name."),
    ctx: str = typer.Option("2048,32768,131072", "--ctx", help="Context sizes (comma list)."),
    cache_type: str = typer.Option("f16", "--cache-type", "-ct", help="KV cache types (comma list): f16, q8_0, q4_0..."),
    quant: str = typer.Option("Q4_K_M", "--quant", "-q", help="Quant level for an unbuilt preset (nominal bits per weight)."),
    device: Optional[str] = typer.Option(None, "--device", help="Check the fit against this device profile ('auto' for this machine)."),
    ubatch: int = typer.Option(512, "-ub", "--ubatch", help="Physical batch (sizes the compute buffer)."),
    flash_attn: bool = typer.Option(True, "--flash-attn/--no-flash-attn", help="Without flash attention the KQ matrix grows with context."),
) -> None:
    """Project weights / KV cache / compute memory per context without running anything."""
    from edgebench.present import tables
    from edgebench.records import CACHE_TYPES
    from edgebench.run.spec import parse_list

    ctxs = parse_list(ctx, int, "ctx")
    if not ctxs or min(ctxs) < 1:
        raise InputError(f"--ctx must list positive sizes, got {ctx!r}")
    types = parse_list(cache_type, str, "cache_type")
    bad = [t for t in types if t not in CACHE_TYPES]
    if bad:
        raise InputError(f"unknown cache type {bad[0]!r}; valid: {', '.join(CACHE_TYPES)}")
    if ubatch < 1:
        raise InputError(f"--ubatch must be >= 1, got {ubatch}")
    tables.print_memory_projection(model, list(ctxs), list(types), quant, device, ubatch, flash_attn)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code (so tests can call it in-process)."""
    try:  # typer >= 0.29 vendors click; older typer uses click itself
        from typer._click import exceptions as click_exc
    except ImportError:  # pragma: no cover
        import click.exceptions as click_exc

    try:
        rv = app(args=argv, prog_name="edgebench", standalone_mode=False)
        return int(rv or 0)
    except InputError as e:
        _err(str(e))
        return EXIT_INPUT
    except click_exc.NoArgsIsHelpError as e:
        typer.echo(e.ctx.get_help() if e.ctx else str(e), err=True)
        return EXIT_INPUT
    except click_exc.UsageError as e:
        _err(e.format_message().replace("\n", " "))
        return EXIT_INPUT
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
