"""`edgebench models make`: build a preset's synthetic model, or requantize a user's GGUF
(``--from``), at quant levels, with a progress bar.

Building runs the backend's writer and llama.cpp's quantizer in this process (there is no sweep to
protect here; `edgebench run` builds in the case's worker instead)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from edgebench.errors import InputError


def make_models(preset: str, quant: str, out: Path | None, backend: str) -> list[str]:
    """Build (or find in the cache) ``preset`` at each level of the comma list ``quant``; prints
    and returns the paths. ``out`` replaces the model cache folder ($EDGEBENCH_HOME). Blocks."""
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
    old_home = os.environ.get("EDGEBENCH_HOME")
    if out is not None:
        os.environ["EDGEBENCH_HOME"] = str(out)
    try:
        return _build_levels(preset, levels, lambda q, progress: cls.build_synthetic(preset, q, progress=progress))
    finally:  # the caller's cache stays its own (in-process callers: tests, scripts)
        if old_home is None:
            os.environ.pop("EDGEBENCH_HOME", None)
        else:
            os.environ["EDGEBENCH_HOME"] = old_home


def make_requantized(src: Path, quant: str, out: Path | None, backend: str = "llama-cpp") -> list[str]:
    """Requantize the user's GGUF ``src`` to each level of the comma list ``quant`` (or find them
    in the cache: models/requant.py); prints and returns the paths. ``out`` replaces the cache
    folder, as for presets. A source llama.cpp cannot quantize is bad input (InputError). Blocks."""
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
            return requant.ensure_requantized(src, q, cache=out, progress=progress)
        except RuntimeError as e:  # llama.cpp refused the file: it is the input that is wrong
            raise InputError(str(e).splitlines()[0]) from None

    return _build_levels(src.name, levels, build)


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
    return _build_levels(src.name, levels, lambda q, progress: ensure_onnx_from_gguf(src, q, out, progress))


def _build_levels(what: str, levels: list[str], build: Callable[[str, Callable], Path | str]) -> list[str]:
    """``build(level, progress)`` for each level under one progress bar per level; prints the paths."""
    paths = []
    with Progress(console=Console(stderr=True)) as p:
        for q in levels:
            task = p.add_task(f"{what} {q}", total=None)
            path = build(q, lambda d, t, task=task: p.update(task, completed=d, total=t))
            p.update(task, completed=1, total=1)
            p.console.print(path)
            paths.append(str(path))
    return paths
