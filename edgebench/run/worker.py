"""Runs one Case in its own process and streams records back as JSON lines.

Protocol (one JSON object per line on the fd the runner passes; llama.cpp's own printing goes to
stderr, which the runner keeps as the case's log):
  {"t": "info", "info": {...}}                    model facts, versions, skipped profilers
  {"t": "progress", "stage": "warmup"|"rep"|"profile", "rep": i, "reps": n}
  {"t": "samples", "samples": [Sample dicts]}     streamed as they are made (after each rep)
  {"t": "done"} | {"t": "error", "error": "one line"}

Method (DESIGN.md): random token ids; warmup once (not stored); per rep: reset the cache, fill
`depth` tokens (untimed), time one prefill of n_prompt tokens, then time each of n_gen decode
steps on its own. perf_counter_ns around calls that synchronize; nothing else in the timed region.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import numpy as np

from edgebench.records import Case, Sample

Emit = Callable[[dict], None]
SEED = 1234  # token ids are random but reproducible


@contextmanager
def _phases(profilers, phase: str, rep: int) -> Iterator[None]:
    with ExitStack() as stack:
        for p in profilers:
            stack.enter_context(p.phase(phase, rep))
        yield


def _measure_rep(backend, case: Case, rng, n_vocab: int, profilers, rep: int) -> tuple[int, list[int]]:
    """One repetition; returns (prefill ns, [decode step ns])."""
    depth_tokens = rng.integers(0, n_vocab, case.depth).tolist()
    prompt = rng.integers(0, n_vocab, case.n_prompt).tolist()
    gen = rng.integers(0, n_vocab, case.n_gen).tolist()
    steps = [0] * case.n_gen
    clock = time.perf_counter_ns
    backend.reset()
    if depth_tokens:
        backend.prefill(depth_tokens)
    with _phases(profilers, "prefill", rep):
        t0 = clock()
        backend.prefill(prompt)
        prefill_ns = clock() - t0
    with _phases(profilers, "decode", rep):
        for i, tok in enumerate(gen):
            t0 = clock()
            backend.decode_step(tok)
            steps[i] = clock() - t0
    return prefill_ns, steps


def run_case(case: Case, emit: Emit) -> None:
    from edgebench.backends import backend_class
    from edgebench.profilers import DEFAULT_PROFILERS, profiler_class

    backend = backend_class(case.backend)()
    profilers = [profiler_class(n)() for n in dict.fromkeys(DEFAULT_PROFILERS + case.profile)]
    skipped = {}
    for p in list(profilers):
        reason = p.skip_reason(backend)
        if reason:
            skipped[p.name] = reason
            profilers.remove(p)
    passive = [p for p in profilers if not p.intrusive]
    intrusive = [p for p in profilers if p.intrusive]

    def flush(extra: list[Sample] = ()) -> None:
        out = list(extra)
        for p in passive:
            out.extend(p.collect())
        if out:
            emit({"t": "samples", "samples": [s.to_dict() for s in out]})

    try:
        for p in passive:
            p.attach(backend)
        with _phases(passive, "load", -1):
            t0 = time.perf_counter_ns()
            info = backend.load(case)
            load_ns = time.perf_counter_ns() - t0
        model = {k: v for k, v in info.to_dict().items() if k != "extra"} | info.extra
        emit({"t": "info", "info": {"model": model, "versions": backend.versions(), "skipped_profilers": skipped}})
        flush([Sample(-1, "load", "load_ns", load_ns)])

        rng = np.random.default_rng(SEED)
        if case.warmup:
            emit({"t": "progress", "stage": "warmup", "rep": 0, "reps": case.reps})
            warm = Case.from_dict(case.to_dict() | {"n_gen": min(case.n_gen, 2)})
            _measure_rep(backend, warm, rng, info.n_vocab, [], -1)

        for rep in range(case.reps):
            emit({"t": "progress", "stage": "rep", "rep": rep, "reps": case.reps})
            prefill_ns, steps = _measure_rep(backend, case, rng, info.n_vocab, passive, rep)
            flush([Sample(rep, "prefill", "prefill_ns", prefill_ns)]
                  + [Sample(rep, "decode", "decode_step_ns", ns, idx=i) for i, ns in enumerate(steps)])

        # Intrusive profilers get reps of their own: they never touch the numbers above.
        for p in intrusive:
            p.attach(backend)
            n = p.reps_for(case)
            for rep in range(n):
                emit({"t": "progress", "stage": "profile", "rep": rep, "reps": n, "profiler": p.name})
                prefill_ns, steps = _measure_rep(backend, case, rng, info.n_vocab, [p], rep)
                flush([Sample(rep, "prefill", "profiled_ns", prefill_ns, label=p.name),
                       Sample(rep, "decode", "profiled_ns", sum(steps), label=p.name)])
            p.detach(backend)
            flush(p.collect())
        for p in passive:
            p.detach(backend)
        flush()
        notes = {p.name: {"warnings": p.warnings, "skipped": p.skipped} for p in profilers
                 if getattr(p, "warnings", None) or getattr(p, "skipped", None)}
        if notes:
            emit({"t": "info", "info": {"profiler_notes": notes}})
    finally:
        for line in backend.log_lines():  # the runtime's log goes to the case's log file
            print(line, file=sys.stderr)
        backend.close()


def main() -> int:
    """Entry point: ``python -m edgebench.run.worker PROTOCOL_FD`` with the case as JSON on stdin."""
    proto = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    # Anything the runtime prints on stdout would corrupt nothing (the protocol has its own fd),
    # but keep it out of the terminal: send it to the case log with stderr.
    os.dup2(2, 1)

    def emit(msg: dict) -> None:
        proto.write(json.dumps(msg) + "\n")

    try:
        case = Case.from_dict(json.loads(sys.stdin.read()))
        run_case(case, emit)
    except Exception as e:  # reported as the case's failure; the sweep goes on
        import traceback

        traceback.print_exc()  # full detail in the case log
        emit({"t": "error", "error": f"{type(e).__name__}: {e}".splitlines()[0]})
        return 1
    emit({"t": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
