"""`edgebench models make`: build a preset's synthetic model, or requantize a user's GGUF
(``--from``), at quant levels, with a progress bar.

Building runs the backend's writer and llama.cpp's quantizer in this process (there is no sweep to
protect here; `edgebench run` builds in the case's worker instead). Levels are built in the model
cache ($EDGEBENCH_HOME: what a level is built from, e.g. the F16 of a preset, and the build locks
stay there, and a level built before is reused); ``out`` then receives exactly the levels asked for,
under their own names (a hard link where the cache is on the same filesystem, else a copy; an
ONNX file's external-data sidecar and a genai folder come whole). The paths are returned; the CLI
prints them on stdout, one per line."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from edgebench.errors import InputError


def make_models(preset: str, quant: str, out: Path | None, backend: str) -> list[str]:
    """Build (or find in the cache) ``preset`` at each level of the comma list ``quant``; returns
    the paths (in ``out`` when given: module docstring). Blocks."""
    from edgebench.backends import backend_class
    from edgebench.models.presets import get_preset

    get_preset(preset)
    cls = backend_class(backend)
    levels = []
    for q in quant.split(","):
        canon = cls.check_quant(q.strip())
        if canon is None:
            raise InputError(f"unknown quant level {q!r} for {cls.name}; valid: {', '.join(cls.quant_levels)}")
        levels.append(canon)
    return _place_all(_build_levels(preset, levels, lambda q, progress: cls.build_synthetic(preset, q, progress=progress)), out)


def make_requantized(src: Path, quant: str, out: Path | None, backend: str = "llama-cpp") -> list[str]:
    """Requantize the user's GGUF ``src`` to each level of the comma list ``quant`` (or find them
    in the cache: models/requant.py); returns the paths (in ``out`` when given, as for presets). A
    source llama.cpp cannot quantize is bad input (InputError). Blocks."""
    from edgebench.backends import canonical_name
    from edgebench.models import requant
    from edgebench.models.quant_levels import GGUF_QUANTS

    if canonical_name(backend) == "onnxruntime":
        return _make_onnx(src, quant, out)
    if canonical_name(backend) != "llama-cpp":
        raise InputError(f"--from builds GGUF levels (llama-cpp) or ONNX levels (onnxruntime); nothing for {backend}")
    levels = list(dict.fromkeys(GGUF_QUANTS.check(q) for q in quant.split(",")))
    from_quant = requant.source_quant(src)  # InputError for anything but a whole GGUF file
    console = Console(stderr=True, soft_wrap=True)
    if requant.is_quantized(from_quant):
        console.print(f"[yellow]note:[/yellow] {requant.requant_note(from_quant)}")

    def build(q: str, progress) -> Path:
        try:
            return requant.ensure_requantized(src, q, progress=progress)
        except RuntimeError as e:  # llama.cpp refused the file: it is the input that is wrong
            raise InputError(str(e).splitlines()[0]) from None

    return _place_all(_build_levels(src.name, levels, build), out)


def _make_onnx(src: Path, quant: str, out: Path | None) -> list[str]:
    """The GGUF ``src`` as ONNX decoders holding its own weights (models/gguf_to_onnx.py), one per
    ONNX level of the comma list ``quant``; InputError for an architecture it cannot convert."""
    from edgebench.models import requant
    from edgebench.models.gguf_to_onnx import ensure_onnx_from_gguf, gguf_shape
    from edgebench.models.quant_levels import ONNX_QUANTS

    levels = list(dict.fromkeys(ONNX_QUANTS.check(q) for q in quant.split(",")))
    _, carried = gguf_shape(Path(src).expanduser())  # bad input (file, architecture) before any bar
    from_quant = carried["edgebench.requantized_from"]
    if requant.is_quantized(from_quant):
        Console(stderr=True, soft_wrap=True).print(f"[yellow]note:[/yellow] {requant.requant_note(from_quant)}")
    return _place_all(_build_levels(src.name, levels, lambda q, progress: ensure_onnx_from_gguf(src, q, None, progress)), out)


def _build_levels(what: str, levels: list[str], build: Callable[[str, Callable], Path | str]) -> list[str]:
    """``build(level, progress)`` for each level under one progress bar per level (stderr)."""
    paths = []
    with Progress(console=Console(stderr=True)) as p:
        for q in levels:
            task = p.add_task(f"{what} {q}", total=None)
            path = build(q, lambda d, t, task=task: p.update(task, completed=d, total=t))
            p.update(task, completed=1, total=1)
            paths.append(str(path))
    return paths


def _place_all(paths: list[str], out: Path | None) -> list[str]:
    """The built levels in ``out`` (nothing else: no source level, no lock file), or where the cache
    holds them when no ``out`` was given."""
    if out is None:
        return paths
    from edgebench.models.cache import make_dir

    d = make_dir(Path(out).expanduser())
    return [str(_place(Path(p), d)) for p in paths]


def _place(src: Path, d: Path) -> Path:
    """``src`` (a file with any ``<name>.data`` sidecar, or a folder) as ``d / src.name``, replaced
    atomically: a hard link where possible, else a copy."""
    dst = d / src.name
    if dst.resolve() == src.resolve():
        return dst
    if src.is_dir():
        tmp = d / f".{src.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, copy_function=_link_or_copy)
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(tmp, dst)
        return dst
    for f in (src, src.with_name(src.name + ".data")):
        if f.exists():
            tmp = d / f".{f.name}.tmp-{os.getpid()}"
            tmp.unlink(missing_ok=True)
            _link_or_copy(f, tmp)
            os.replace(tmp, d / f.name)
    return dst


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)
