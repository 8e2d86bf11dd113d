"""Runs one Case in its own process and streams records back as typed messages (run/protocol.py),
one JSON line each, on the fd the runner passes; llama.cpp's own printing goes to stderr, which
the runner keeps as the case's log.

A preset case is built first (writing the GGUF and running llama.cpp's quantizer, which is C code
that can crash), and so is a user's GGUF requantized to a level, in a forked child of this worker
(run/build.py: the build's memory never counts as the case's): a crash then ends this case only.
The worker reports the built path and waits for the runner's Go before it loads the model.

Method (DESIGN.md): random token ids; warmup once (not stored); per rep: reset the cache, fill
`depth` tokens (untimed), time one prefill of n_prompt tokens, then time each of n_gen decode
steps on its own: right after the prompt for a "pg" case, or (a "split" case: llama-bench's pp
and tg tests) after emptying the cache and filling the depth again.
perf_counter_ns around calls that synchronize; nothing else in the timed region.
With case.quality the quality pass (run/quality.py) follows everything timed; a quality-only
case (speed False) has no warmup and no reps.

The worker dies with its parent: on Linux the kernel sends it SIGKILL when the parent dies
(PR_SET_PDEATHSIG), and everywhere a thread watches its stdin, which the runner keeps open until
the worker is done: end of input while measuring means the parent is gone.

Test hooks (nothing sets them otherwise): EDGEBENCH_TEST_BUILD_SIGNAL (run/build.py); with
EDGEBENCH_TEST_RLIMIT_AS=BYTES the worker measures under an
address-space limit (RLIMIT_AS) of BYTES more than it has mapped before loading the model: a small
board's memory, without a cgroup.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import numpy as np

from edgebench.records import Case, Sample
from edgebench.run import protocol as msg
from edgebench.run.build import BUILD_SIGNAL_ENV, BuildError, build, die_with_parent  # noqa: F401 (BUILD_SIGNAL_ENV: tests)
from edgebench.run.quality import QualityError
from edgebench.run.reps import RepPlan

Emit = Callable[[msg.Message], None]
RLIMIT_AS_ENV = "EDGEBENCH_TEST_RLIMIT_AS"
SEED = 1234  # token ids are random but reproducible


@contextmanager
def _phases(profilers, phase: str, rep: int) -> Iterator[None]:
    with ExitStack() as stack:
        for p in profilers:
            stack.enter_context(p.phase(phase, rep))
        yield


def _measure_rep(backend, case: Case, rng, n_vocab: int, profilers, rep: int) -> tuple[int | None, list[int]]:
    """One repetition; returns (prefill ns, [decode step ns]). An empty phase (llama-bench's -p 0 or
    -n 0) is not run: no prefill call with zero tokens (prefill ns None), no decode steps ([])."""
    depth_tokens = rng.integers(0, n_vocab, case.depth).tolist()
    prompt = rng.integers(0, n_vocab, case.n_prompt).tolist()
    gen = rng.integers(0, n_vocab, case.n_gen).tolist()
    steps = [0] * case.n_gen
    prefill_ns = None
    clock = time.perf_counter_ns
    backend.reset()
    if depth_tokens:
        backend.prefill(depth_tokens)
    if prompt:
        with _phases(profilers, "prefill", rep):
            t0 = clock()
            backend.prefill(prompt)
            prefill_ns = clock() - t0
    if gen and prompt and case.test == "split":  # llama-bench's tg: its own test, from the depth
        backend.reset()
        if depth_tokens:
            backend.prefill(depth_tokens)
    if gen:
        with _phases(profilers, "decode", rep):
            for i, tok in enumerate(gen):
                t0 = clock()
                backend.decode_step(tok)
                steps[i] = clock() - t0
    return prefill_ns, steps


def run_case(case: Case, emit: Emit) -> None:
    from edgebench.backends import backend_class
    from edgebench.profilers import DEFAULT_PROFILERS, profiler_class

    clock = time.monotonic
    spent: dict[str, float] = {}  # the harness's own seconds in this worker (case info "overhead")
    t = clock()
    backend = backend_class(case.backend)()
    spent["backend_import_s"] = clock() - t
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
            emit(msg.Samples(tuple(out)))

    try:
        for p in passive:
            p.attach(backend)
        with _phases(passive, "load", -1):
            t0 = time.perf_counter_ns()
            info = backend.load(case)
            load_ns = time.perf_counter_ns() - t0
        spent["load_s"] = load_ns / 1e9
        model = {k: v for k, v in info.to_dict().items() if k != "extra"} | info.extra
        emit(msg.Info({"model": model, "versions": backend.versions(), "skipped_profilers": skipped}))
        flush([Sample(-1, "load", "load_ns", load_ns)])

        rng = np.random.default_rng(SEED)
        if case.warmup and case.speed:
            emit(msg.Progress("warmup", 0, case.reps))
            t = clock()
            warm = Case.from_dict(case.to_dict() | {"n_gen": min(case.n_gen, 2)})  # -n 0 stays 0, -p 0 too
            _measure_rep(backend, warm, rng, info.n_vocab, [], -1)
            spent["warmup_s"] = clock() - t

        plan = RepPlan(case.reps, case.target_ci, case.max_time_s)  # fixed -r N, or -r auto (run/reps.py)
        rep, timed_ns, t = 0, 0, clock()
        while case.speed and plan.more():  # a quality-only case has no speed reps
            emit(msg.Progress("rep", rep, case.reps))
            prefill_ns, steps = _measure_rep(backend, case, rng, info.n_vocab, passive, rep)
            timed = [Sample(rep, "decode", "decode_step_ns", ns, idx=i) for i, ns in enumerate(steps)]
            if prefill_ns is not None:  # -p 0: no prefill was timed
                timed.insert(0, Sample(rep, "prefill", "prefill_ns", prefill_ns))
            flush()
            timed_ns += (prefill_ns or 0) + sum(steps)
            plan.add(rep, prefill_ns, steps, case.n_prompt, case.n_gen, timed, flush)
            rep += 1
        if case.speed:
            plan.flush(flush)
            emit(msg.Info({"reps": plan.info()}))
            spent["timed_s"] = timed_ns / 1e9  # the reps' timed regions; the rest of the loop is overhead
            spent["reps_untimed_s"] = max(clock() - t - spent["timed_s"], 0.0)
        t = clock()

        # Intrusive profilers get reps of their own: they never touch the numbers above.
        for p in intrusive if case.speed else ():
            p.attach(backend)
            n = p.reps_for(case)
            for rep in range(n):
                emit(msg.Progress("profile", rep, n, profiler=p.name))
                prefill_ns, steps = _measure_rep(backend, case, rng, info.n_vocab, [p], rep)
                profiled = []
                if prefill_ns is not None:
                    profiled.append(Sample(rep, "prefill", "profiled_ns", prefill_ns, label=p.name))
                if steps:
                    profiled.append(Sample(rep, "decode", "profiled_ns", sum(steps), label=p.name))
                flush(profiled)
            p.detach(backend)
            flush(p.collect())
        for p in passive:
            p.detach(backend)
        flush()
        spent["profile_s"] = clock() - t
        if case.quality:  # after everything timed: it may grow the context (run/quality.py)
            from edgebench.run.quality import run_quality

            run_quality(backend, case, emit, lambda ref: _reference_model(case, ref))
        notes = {p.name: {"warnings": p.warnings, "skipped": p.skipped} for p in profilers
                 if getattr(p, "warnings", None) or getattr(p, "skipped", None)}
        if notes:
            emit(msg.Info({"profiler_notes": notes}))
        emit(msg.Info({"overhead": spent}))
    finally:
        for line in backend.log_lines():  # the runtime's log goes to the case's log file
            print(line, file=sys.stderr)
        backend.close()


def _reference_model(case: Case, ref: str) -> str:
    """The path of a case's quality reference: a file as given, or for "quant:LEVEL" this case's
    preset / source built at LEVEL (found in the cache: its reference case ran first)."""
    from edgebench.run.quality import REF_QUANT

    if not ref.startswith(REF_QUANT):
        return ref
    level = dataclasses.replace(case, model="", quant_request=ref[len(REF_QUANT):])
    return build(level, lambda m: None).model


def _watch_input() -> None:
    """After Go the runner sends nothing more but keeps stdin open: end of input means it died."""
    import threading

    def watch() -> None:
        while os.read(0, 1 << 10):  # the raw fd: a buffered reader's lock would block shutdown
            pass
        os._exit(1)  # the parent is gone: stop measuring now

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _limit_memory() -> None:
    limit = os.environ.get(RLIMIT_AS_ENV)
    if limit:  # test hook (module docstring)
        import resource

        with open("/proc/self/statm") as f:
            mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        resource.setrlimit(resource.RLIMIT_AS, (mapped + int(limit), mapped + int(limit)))


def main() -> int:
    """Entry point: ``python -m edgebench.run.worker PROTOCOL_FD [PARENT_PID]``; Start, then Go, on stdin."""
    die_with_parent(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    proto = os.fdopen(int(sys.argv[1]), "w", buffering=1)
    # Anything the runtime prints on stdout would corrupt nothing (the protocol has its own fd),
    # but keep it out of the terminal: send it to the case log with stderr.
    os.dup2(2, 1)

    def emit(m: msg.Message) -> None:
        proto.write(m.to_json() + "\n")

    emit(msg.Info({"overhead": {}}))  # the first message: the runner times process start + imports to it
    try:
        start = msg.from_json(sys.stdin.readline())
        if not isinstance(start, msg.Start):
            raise RuntimeError(f"expected a Start message first, got {start}")
        t = time.monotonic()
        case = build(start.case, emit)
        if case is not start.case:
            emit(msg.Info({"overhead": {"build_s": time.monotonic() - t}}))
        line = sys.stdin.readline()
        if not line or not isinstance(msg.from_json(line), msg.Go):
            return 0  # the runner decided not to measure this case (it does not fit, ...)
        _watch_input()
        _limit_memory()
        run_case(case, emit)
    except Exception as e:  # reported as the case's failure; the sweep goes on
        import traceback

        traceback.print_exc()  # full detail in the case log
        reason = str(e) if isinstance(e, (BuildError, QualityError)) else f"{type(e).__name__}: {e}".splitlines()[0]
        emit(msg.Error(msg.clip(reason)))
        return 1
    emit(msg.Done())
    return 0


if __name__ == "__main__":
    sys.exit(main())
