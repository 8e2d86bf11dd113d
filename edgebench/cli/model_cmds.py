"""`models ...`, `devices ...` and `memory`: what can be run, where, and whether it fits."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgebench.cli.app import app, devices_app, models_app
from edgebench.errors import InputError


@models_app.command("list")
def models_list() -> None:
    """Presets with their shapes and parameter counts."""
    from edgebench.present import tables

    tables.print_presets()


@models_app.command("make")
def models_make(
    preset: Optional[str] = typer.Argument(None, help="Preset name (see `edgebench models list`)."),
    quant: str = typer.Option("F16", "--quant", "-q", help="Comma list of quant levels."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the levels asked for into this folder (they are built in, and stay in, the model cache, $EDGEBENCH_HOME)."),
    backend: str = typer.Option("llama-cpp", "--backend", help="llama-cpp (GGUF), onnxruntime (ONNX) or onnxruntime-genai (genai folder)."),
    source: Optional[Path] = typer.Option(None, "--from", help="Requantize this GGUF file (real weights) instead of building a preset."),
) -> None:
    """Write a synthetic model, or a GGUF of your own requantized (--from), at one or more quant levels."""
    from edgebench.run.make import make_models, make_requantized

    if source is not None:
        if preset is not None:
            raise InputError(f"give a preset or --from FILE, not both (got {preset!r} and {source})")
        paths = make_requantized(source, quant, out, backend)
    elif preset is None:
        raise InputError("name a preset (see `edgebench models list`) or give --from FILE.gguf")
    else:
        paths = make_models(preset, quant, out, backend)
    for p in paths:  # stdout, one per line: `edgebench run $(edgebench models make ...)` style scripts
        typer.echo(p)


@models_app.command("inspect")
def models_inspect(path: Path = typer.Argument(..., help="A .gguf file.")) -> None:
    """Architecture, shapes, quant types per tensor group, bits per weight, size, context length."""
    from edgebench.present import tables

    tables.print_gguf_info(path)


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
