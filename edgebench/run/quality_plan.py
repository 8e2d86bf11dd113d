"""Plan the quality pass of a run (--quality, `edgebench quality`): check its inputs before anything
runs, give every case its quality fields and its reference, and add the reference case where the
sweep lacks it.

The reference of a level is, by --quality-ref:
- a LEVEL (default: the backend's reference_quant, F16 for GGUF): that level of the same model (a
  preset, or a user's GGUF requantized). Its case is the reference (quality_ref ""); the others
  point at it as "quant:LEVEL" and find it in the build cache. A sweep without that level gets a
  reference case (quality only) added. A model file that is no ladder is its own reference.
- a FILE: that model. A case measuring that very file is the reference; else a quality-only case
  for it is added. The others point at its path.
Reference cases run first: the candidates read what they write (run/quality.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from edgebench.errors import InputError
from edgebench.records import Case
from edgebench.run.plan import ModelRef
from edgebench.run.quality import REF_QUANT
from edgebench.run.spec import RunSpec

Planned = list[tuple[ModelRef, Case]]


def check_text(path: str, ctx: int) -> Path:
    """The text file, resolved; InputError for a missing, empty, binary or too-short one (a token is
    at least one byte, so fewer bytes than a chunk's tokens cannot fill one; the exact token count is
    checked by the worker, with the model's tokenizer)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"--text {path}: no such file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"--text {path} cannot be read: {e.strerror or e}") from None
    if not data.strip():
        raise InputError(f"--text {path} is empty")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"--text {path} is not text (binary data or not UTF-8)") from None
    if b"\0" in data:  # valid UTF-8, but no text holds NUL bytes
        raise InputError(f"--text {path} is not text (binary data or not UTF-8)")
    if len(data) + 2 < ctx:
        raise InputError(f"--text {path} has {len(data)} bytes: too short for one chunk of {ctx} tokens "
                         f"(use a longer text or a smaller --quality-ctx)")
    return p.resolve()


def apply(spec: RunSpec, planned: Planned) -> tuple[Planned, list[str]]:
    """The planned cases with their quality fields, reference cases first; notes for the user."""
    if not spec.quality or not planned:
        return planned, []
    text = str(check_text(spec.quality_text, spec.quality_ctx)) if spec.quality_text else ""
    common = dict(speed=spec.speed, quality=True, quality_ctx=spec.quality_ctx, quality_chunks=spec.quality_chunks,
                  quality_text=text, quality_seed=spec.quality_seed,
                  quality_top_k=spec.quality_top_k)
    planned = [(ref, dataclasses.replace(case, **common)) for ref, case in planned]
    target = spec.quality_ref
    if target and (Path(target).expanduser().exists() or _looks_like_path(target)):
        return _against_file(spec, planned, target)
    return _against_level(planned, target)


def _looks_like_path(s: str) -> bool:
    return "/" in s or Path(s).suffix.lower() in (".gguf", ".onnx", ".fake")


def _case_file(case: Case) -> str:
    return case.model or case.source


def _against_file(spec: RunSpec, planned: Planned, target: str) -> tuple[Planned, list[str]]:
    from edgebench.backends import BACKEND_NAMES, backend_class

    p = Path(target).expanduser()
    if not p.exists():
        raise InputError(f"--quality-ref {target}: no such file (and not a quant level)")
    ref_path = str(p.resolve())
    _check_vocab(ref_path, planned)
    refs, others = [], []
    for ref, case in planned:
        is_ref = bool(case.model) and Path(case.model).resolve() == Path(ref_path)
        q = dataclasses.replace(case, quality_ref="" if is_ref else ref_path)
        (refs if is_ref else others).append((ref, q))
    if not refs:
        suffix = "" if p.is_dir() else p.suffix.lower()
        # the sweep's own backend first; else any that reads the file and computes logits, so one
        # reference (a GGUF on llama.cpp, say) scores levels of another runtime on the same tokens
        backend = next((b for b in spec.backends if suffix in backend_class(b).suffixes), None) or next(
            (b for b in BACKEND_NAMES if suffix in backend_class(b).suffixes and "logits" in backend_class(b).capabilities),
            None)
        if backend is None:
            raise InputError(f"--quality-ref {target}: no backend computes logits for a {suffix or 'folder'} model")
        first = planned[0][1]
        case = dataclasses.replace(first, backend=backend, model=ref_path, preset="", source="", quant_request="",
                                   speed=False, quality_ref="")
        refs.append((ModelRef(backend, path=ref_path), case))
    return refs + others, []


def _check_vocab(ref_path: str, planned: Planned) -> None:
    """A GGUF reference and a GGUF candidate with different vocabularies: bad input, said at once."""
    if not ref_path.lower().endswith(".gguf"):
        return
    from edgebench.models.gguf_file import read_gguf_info

    want = read_gguf_info(ref_path).n_vocab
    for _, case in planned:
        f = _case_file(case)
        if f.lower().endswith(".gguf") and Path(f).exists():
            got = read_gguf_info(f).n_vocab
            if want and got and got != want:
                raise InputError(f"--quality-ref {Path(ref_path).name} has a vocabulary of {want} tokens but "
                                 f"{Path(f).name} has {got}: they cannot be compared")


def _against_level(planned: Planned, level: str) -> tuple[Planned, list[str]]:
    from edgebench.backends import backend_class

    notes: list[str] = []
    if level and not any(backend_class(b).check_quant(level) for b in {ref.backend for ref, _ in planned}):
        raise InputError(f"--quality-ref {level}: neither a model file nor a quant level of "
                         f"{', '.join(sorted({ref.backend for ref, _ in planned}))}")
    groups: dict[ModelRef, list[int]] = {}
    for i, (ref, case) in enumerate(planned):
        if ref.quant and (case.preset or case.source):
            groups.setdefault(dataclasses.replace(ref, quant=""), []).append(i)
    out = list(planned)
    is_ref = [not (ref.quant and (case.preset or case.source)) for ref, case in planned]
    added: Planned = []
    for key, idx in groups.items():
        cls = backend_class(key.backend)
        want = level or cls.reference_quant
        canon = cls.check_quant(want) if want else None
        if canon is None:
            if level:
                raise InputError(f"--quality-ref {level}: not a file nor a {key.backend} quant level "
                                 f"({', '.join(cls.quant_levels)})")
            for i in idx:
                is_ref[i] = True
            continue
        have = [i for i in idx if planned[i][0].quant == canon]
        for i in idx:
            ref, case = planned[i]
            is_ref[i] = i in have
            out[i] = (ref, dataclasses.replace(case, quality_ref="" if i in have else REF_QUANT + canon))
        if not have:
            ref, case = planned[idx[0]]
            added.append((dataclasses.replace(ref, quant=canon),
                          dataclasses.replace(case, model="", quant_request=canon, speed=False, quality_ref="")))
    for i, (ref, case) in enumerate(planned):
        if not (ref.quant and (case.preset or case.source)):
            out[i] = (ref, dataclasses.replace(case, quality_ref=""))
            name = Path(case.model).name
            note = (f"{name}: no reference level (a single file): scored against itself (perplexity only); "
                    f"--quality-ref FILE|LEVEL scores it against another")
            if note not in notes:
                notes.append(note)
    refs = added + [out[i] for i in range(len(out)) if is_ref[i]]
    return refs + [out[i] for i in range(len(out)) if not is_ref[i]], notes
