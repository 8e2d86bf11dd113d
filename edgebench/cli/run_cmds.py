"""`run` and `quality`: measure, then print the table and write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgebench.cli.app import DEFAULT_OUT, app
from edgebench.errors import EXIT_INTERRUPTED
from edgebench.run.spec import AUTO_HELP, PG_HELP, QUALITY_HELP, REPS_HELP, SWEEP_HELP

# Quality options, shared by `run --quality` and `quality` (a fresh OptionInfo for each command).
_QUALITY_METAVAR = {"--quality-ctx": "TOKENS", "--quality-chunks": "N", "--text": "FILE", "--quality-ref": "LEVEL|FILE",
                    "--quality-seed": "N", "--quality-top-k": "K", "--max-kld": "NATS"}


def _q(flag: str):
    return typer.Option(None, flag, help=QUALITY_HELP[flag], metavar=_QUALITY_METAVAR.get(flag))


_SWEEP_METAVAR = {"flash_attn": "on|off|auto", "cache_type_k": "TYPE", "cache_type_v": "TYPE", "ep": "EP",
                  "graph_opt": "LEVEL"}  # the rest take whole numbers


def _s(name: str, *flags: str):  # a sweep flag of `run`: repeatable, each a comma list
    return typer.Option(None, *flags, help=SWEEP_HELP[name] + " Repeatable; comma lists work.",
                        metavar=_SWEEP_METAVAR.get(name, "N[,N...]"))


@app.command()
def run(
    model: Optional[list[str]] = typer.Option(None, "--model", "-m", metavar="PATH|PRESET", help="GGUF/ONNX file, folder of models, or preset name (repeatable; comma lists work)."),
    quant: Optional[str] = typer.Option(None, "--quant", "-q", metavar="LEVELS", help="Quant levels for presets, e.g. Q4_K_M,Q8_0 (default: the ladder)."),
    backend: Optional[str] = typer.Option(None, "--backend", metavar="NAMES", help="llama-cpp, onnxruntime, onnxruntime-genai (comma list)."),
    n_prompt: Optional[list[str]] = _s("n_prompt", "-p", "--n-prompt"),
    n_gen: Optional[list[str]] = _s("n_gen", "-n", "--n-gen"),
    pg: Optional[list[str]] = typer.Option(None, "-pg", "--prompt-gen", metavar="P,N", help=PG_HELP),
    depth: Optional[list[str]] = _s("depth", "-d", "--depth"),
    reps: Optional[str] = typer.Option(None, "-r", "--reps", metavar="N|auto", help=REPS_HELP),
    target_ci: Optional[str] = typer.Option(None, "--target-ci", metavar="PCT", help=AUTO_HELP["--target-ci"]),
    max_reps: Optional[int] = typer.Option(None, "--max-reps", metavar="N", help=AUTO_HELP["--max-reps"]),
    max_time: Optional[float] = typer.Option(None, "--max-time", metavar="SECONDS", help=AUTO_HELP["--max-time"]),
    processes: Optional[int] = typer.Option(None, "--processes", metavar="N", help="Worker processes per case, the reps split among them and cases interleaved (between-process spread; default 1; under -r auto the least number)."),
    max_processes: Optional[int] = typer.Option(None, "--max-processes", metavar="N", help=AUTO_HELP["--max-processes"]),
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
    profile: Optional[str] = typer.Option(None, "--profile", metavar="NAMES", help="Extra profilers: ops, telemetry."),
    device: Optional[str] = typer.Option(None, "--device", metavar="NAME|auto", help="Device profile name or 'auto'."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Run even if this machine is not --device."),
    cooldown: Optional[float] = typer.Option(None, "--cooldown", metavar="SECONDS", help="Seconds to wait between cases."),
    cooldown_temp: Optional[float] = typer.Option(None, "--cooldown-temp", metavar="CELSIUS", help="Wait between cases until below this temperature (C)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", metavar="SECONDS", help="Per-case timeout in seconds (default 900)."),
    no_warmup: bool = typer.Option(False, "--no-warmup", help="Skip the warmup run."),
    config: Optional[Path] = typer.Option(None, "--config", metavar="FILE", help="sweep.toml with the same options."),
    out: Path = typer.Option(DEFAULT_OUT, "--out", "-o", metavar="DIR", help="Output folder (store + run folders)."),
    store: Optional[str] = typer.Option(None, "--store", metavar="URL", help="Results database URL (default: OUT/edgebench.db), e.g. postgresql://host/db for a fleet."),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="RUN_ID", help="Finish a partial run (RUN_ID)."),
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

    options = dict(
        models=[m for arg in (model or []) for m in arg.split(",")] or None, quants=quant, backends=backend, reps=reps, target_ci=target_ci, max_reps=max_reps, max_time=max_time, processes=processes,
        max_processes=max_processes,
        n_prompt=n_prompt, n_gen=n_gen, pg=pg, depth=depth, threads=threads, ctx=ctx, batch=batch, ubatch=ubatch,
        n_gpu_layers=n_gpu_layers, flash_attn=flash_attn, cache_type_k=cache_type_k, cache_type_v=cache_type_v, ep=ep,
        graph_opt=graph_opt, profile=profile, device=device, timeout=timeout, cooldown=cooldown, cooldown_temp=cooldown_temp,
        verify=False if no_verify else None, warmup=False if no_warmup else None, quality=quality or None,
        quality_ctx=quality_ctx, quality_chunks=quality_chunks, quality_text=text, quality_ref=quality_ref,
        quality_seed=quality_seed, quality_top_k=quality_top_k, max_kld=max_kld)
    if resume:
        outcome = session.resume(resume, out, store_target=store, options=options, config=config)
        raise typer.Exit(_present_run(outcome, report=not no_report))
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
    if outcome.code == EXIT_INTERRUPTED or outcome.failed:  # the session said why, in one line
        return outcome.code
    from rich.console import Console
    from rich.markup import escape

    from edgebench.analysis.summary import cv_warnings
    from edgebench.present import tables
    from edgebench.run.protocol import clip

    console = Console(stderr=True, soft_wrap=True)  # one line per message, however long
    tables.print_rows(outcome.rows, "table", title=f"run {outcome.run_id} ({outcome.elapsed_s:.0f} s)")
    for w in cv_warnings(outcome.rows):
        console.print(f"[yellow]warning:[/yellow] {escape(clip(w))}")
    for gap in _telemetry_gaps(outcome):
        console.print(f"[yellow]note:[/yellow] {escape(clip(gap))}")
    from edgebench.present.ops_brief import ops_lines

    for line in ops_lines(outcome.store, outcome.run_id, outcome.rows):  # --profile ops: the largest classes
        console.print(escape(line))
    if report:
        from edgebench.present import report as report_mod

        try:
            path = report_mod.write_report(outcome.store, [outcome.run_id], outcome.run_dir)
            console.print(f"report: {escape(str(path))}")
        except Exception as e:  # a report problem must never lose the measured run
            console.print(f"[yellow]warning:[/yellow] report not written: {escape(clip(f'{type(e).__name__}: {e}'))}")
    o = outcome.overhead
    harness = (f"; harness overhead {o['harness_s']:.1f} s, timed reps {o['timed_fraction']:.0%} of {o['wall_s']:.1f} s"
               if o.get("timed_fraction") is not None else "")
    console.print(f"stored in {escape(outcome.store.url)}; run folder {escape(str(outcome.run_dir))}{harness}")
    return outcome.code


def _telemetry_gaps(outcome) -> list[str]:
    """--profile telemetry without a readable power source: one line, not only run.json."""
    from edgebench.analysis.energy import telemetry_gap

    cases = [c for c in outcome.store.get_cases(outcome.run_id) if "telemetry" in (c.get("profile") or ())]
    if not cases:
        return []
    s = outcome.store.get_samples(outcome.run_id)
    return sorted({g for c in cases if (g := telemetry_gap(c, s[s["case_id"] == c["case_id"]]))})
