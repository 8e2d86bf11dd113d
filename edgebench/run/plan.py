"""Plan a run: check the spec's backend and profiler names against their registries, resolve its
models (files, folders, presets) per backend and expand the sweep into Cases, a cartesian product
like llama-bench's. Synthetic presets are expanded per quant level; so is a GGUF file when --quant
is given (requantized to each level in the case's worker, models/requant.py); without --quant a
file runs as itself, and other model files always do."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path

from edgebench.errors import InputError, did_you_mean
from edgebench.models.gguf_file import ladder_order
from edgebench.models.hub import HubModel
from edgebench.records import Case
from edgebench.run.spec import SWEEP_PARAMS, RunSpec


@dataclass(frozen=True)
class ModelRef:
    """A model to measure on one backend: a file, or a preset or a user's GGUF (``source``) at a
    quant level still to be built."""

    backend: str
    path: str = ""
    preset: str = ""
    quant: str = ""
    source: str = ""
    hub: HubModel | None = None  # where a model named on the Hugging Face Hub was resolved


def canonical_spec(spec: RunSpec) -> RunSpec:
    """The spec with canonical backend names (aliases folded, repeats dropped) and known profiler
    names; InputError names an unknown one. A run stores this spec."""
    from edgebench.backends import canonical_name
    from edgebench.profilers import check_profiler_name

    backends = tuple(dict.fromkeys(canonical_name(b) for b in spec.backends))
    profile = tuple(check_profiler_name(p) for p in spec.profile)
    return dataclasses.replace(spec, backends=backends, profile=profile)


def resolve_models(spec: RunSpec) -> tuple[list[ModelRef], list[str]]:
    """Model refs for every (backend, model[, quant]) that applies, and notes on what was skipped.

    Validates files (exists, right format, not truncated) so bad input stops before any run."""
    from edgebench.backends import backend_class
    from edgebench.models import hub, presets

    refs: list[ModelRef] = []
    notes: list[str] = []
    files: list[Path] = []
    preset_names: list[str] = []
    hubs: dict[Path, HubModel] = {}
    for m in spec.models:
        if presets.is_preset(m) and not Path(m).exists():
            preset_names.append(presets.get_preset(m).name)
            continue
        if hub.is_hub_ref(m) and not Path(m).exists():
            found = hub.resolve(m)
            hubs[found.path] = found
            files.append(found.path)
            continue
        p = Path(m).expanduser()
        if not p.exists():
            raise InputError(f"model {m!r} is neither a file nor a folder nor a preset{did_you_mean(m, presets.PRESETS)} "
                             f"(presets: {', '.join(presets.PRESETS)})")
        if p.is_dir() and not (p / "genai_config.json").exists() and not any(p.glob("*.onnx")):
            found = ladder_order(p.glob("*.gguf"))
            if not found:
                raise InputError(f"folder {p} holds no .gguf or .onnx model")
            files.extend(found)
        else:
            files.append(p)
    for backend in spec.backends:
        cls = backend_class(backend)
        for f in files:
            suffix = "" if f.is_dir() else f.suffix.lower()
            # a GGUF at --quant levels is built in the backend's own format when it can (ONNX)
            converts = bool(spec.quants) and suffix == ".gguf" and hasattr(cls, "build_from_gguf")
            if suffix not in cls.suffixes and not converts:
                notes.append(f"{f.name}: not a {backend} model, skipped for {backend}")
                continue
            _validate_file(f)
            if spec.quants and suffix == ".gguf" and cls.quants is not None:
                refs.extend(dataclasses.replace(r, hub=hubs.get(f)) for r in _requant_refs(backend, f, spec.quants, notes))
            else:
                note = f"{f.name}: --quant applies to GGUF files and presets; it runs as itself"
                if spec.quants and note not in notes:
                    notes.append(note)
                refs.append(ModelRef(backend, path=str(f), hub=hubs.get(f)))
        quants = spec.quants or cls.default_ladder
        for name in preset_names:
            for q in quants:
                canon = cls.check_quant(q)
                if canon is None:
                    notes.append(f"{q} is not a {backend} quant level, skipped for {backend}")
                    continue
                refs.append(ModelRef(backend, preset=name, quant=canon))
    ladders = preset_names or any(f.suffix.lower() == ".gguf" for f in files)  # --quant applies to them
    if spec.quants and ladders:
        valid_somewhere = {q for q in spec.quants if any(backend_class(b).check_quant(q) for b in spec.backends)}
        bad = [q for q in spec.quants if q not in valid_somewhere]
        if bad:
            levels = sorted({lv for b in spec.backends for lv in backend_class(b).quant_levels})
            raise InputError(f"unknown quant level {bad[0]!r}; valid: {', '.join(levels)}")
    if not refs:
        raise InputError("nothing to run: " + ("; ".join(notes) if notes else "no models"))
    return refs, notes


def _requant_refs(backend: str, f: Path, quants: tuple[str, ...], notes: list[str]) -> list[ModelRef]:
    """The GGUF ``f`` at each level the backend knows, and a note, once per file, when the levels
    are requantized from an already-quantized source."""
    from edgebench.backends import backend_class
    from edgebench.models import requant

    cls = backend_class(backend)
    levels = []
    for q in quants:
        canon = cls.check_quant(q)
        if canon is None:
            notes.append(f"{q} is not a {backend} quant level, skipped for {f.name}")
        elif canon not in levels:
            levels.append(canon)
    from_quant = requant.source_quant(f)
    note = f"{f.name}: {requant.requant_note(from_quant)}"
    if requant.is_quantized(from_quant) and note not in notes:
        notes.append(note)
    return [ModelRef(backend, quant=q, source=str(f)) for q in levels]


def _validate_file(p: Path) -> None:
    if p.suffix.lower() == ".gguf":
        from edgebench.models.gguf_file import validate_gguf

        validate_gguf(p)


def tests(spec: RunSpec) -> list[dict[str, object]]:
    """llama-bench's test list as Case fields. Each -p value is a pp test and each -n value a tg
    test, as in llama-bench; they pair up in order into "split" cases (-p 64,128 -n 32: "pp64 tg32"
    and "pp128"), so one case's reps time one pp and one tg and no test runs twice. Each -pg P,N is
    a "pg" case. A spec stored before split_tests (a resumed old run): the -p x -n product, as then."""
    prompts, gens = spec.sweep.get("n_prompt", (0,)), spec.sweep.get("n_gen", (0,))
    if not spec.split_tests:
        return [{"n_prompt": p, "n_gen": n, "test": "pg"} for p, n in itertools.product(prompts, gens)]
    pairs = [(p, n) for p, n in itertools.zip_longest(prompts, gens, fillvalue=0) if p or n]
    out: list[dict[str, object]] = [{"n_prompt": p, "n_gen": n, "test": "split"} for p, n in dict.fromkeys(pairs)]
    out += [{"n_prompt": p, "n_gen": n, "test": "pg"} for p, n in spec.pg]
    if not out:
        raise InputError("-p 0 and -n 0 leave nothing to time: give prompt tokens, generated tokens or -pg P,N")
    return out


def expand(spec: RunSpec, refs: list[ModelRef], n_threads_default: int) -> list[tuple[ModelRef, Case]]:
    """Models x llama-bench's tests (tests()) x the other sweep values, a cartesian product. The
    Case's model path is filled in for files; a preset or requantized case has none: its worker
    builds the model (run/worker.py)."""
    names = [n for n in spec.sweep if n not in ("n_prompt", "n_gen")]
    grids = [spec.sweep[n] for n in names]
    out = []
    for ref in refs:
        for test in tests(spec):
            for combo in itertools.product(*grids):
                kw = {SWEEP_PARAMS[n][0]: v for n, v in zip(names, combo)} | test
                kw.setdefault("n_threads", n_threads_default)
                try:
                    case = Case(backend=ref.backend, model=ref.path, reps=spec.reps, target_ci=spec.target_ci,
                                max_time_s=spec.max_time, warmup=spec.warmup,
                                profile=spec.profile, preset=ref.preset, quant_request=ref.quant, source=ref.source,
                                timeout_s=spec.timeout, **_hub_fields(ref.hub), **kw)
                except ValueError as e:
                    raise InputError(str(e)) from None
                out.append((ref, case))
    return out


def _hub_fields(found: HubModel | None) -> dict[str, str]:
    """The Case fields that record where a hub model came from (none for a local file)."""
    return {"hub_repo": found.repo, "hub_revision": found.revision, "hub_file": found.file} if found else {}
