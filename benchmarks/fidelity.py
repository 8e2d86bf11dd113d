"""Fidelity: edgebench's figures and wall time next to llama.cpp's own, as ratios measured in one run. Run by hand.

    python3 benchmarks/fidelity.py [--levels F16,Q8_0,Q4_K_M] [-p 512 -n 128 -r 5 -t 2] [--rounds 3]
    python3 benchmarks/fidelity.py --ladder [--rounds 2]
    python3 benchmarks/fidelity.py --auto [--target-ci 2%] [--rounds 2]
    python3 benchmarks/fidelity.py --model a.gguf --model b.gguf
    python3 benchmarks/fidelity.py --flags "-fa 1 -d 256"
    python3 benchmarks/fidelity.py --self [--levels F16,Q4_K_M]
    python3 benchmarks/fidelity.py --bare | --harness [--levels F16]
    python3 benchmarks/fidelity.py --internal [-p 128 -n 32]

Default: `edgebench run` and llama.cpp's llama-bench (built from the sdist of the installed
llama-cpp-python: benchmarks/llama_tools.py) on the same files with the same flags, one level per
command, interleaved (the order flips every round), each a fresh process as a user runs it. Prints
edgebench / llama-bench for pp and tg per level and round, then per level the mean ratio over the
rounds with its 95% interval (issue 17's target: 1.00 +- 0.03 at llama-bench's defaults), and the
wall-time ratio of the two whole commands. Process-to-process spread is several percent on a shared
VM, so only the mean over several rounds says much.

--ladder: the whole ladder (default F16 ... Q2_K) in one command each (`edgebench run -m A -m B ...`
against `llama-bench -m A -m B ...`): the wall-time ratio of issue 17 part 2 (target <= 1.10 at -r 5).

--auto: `edgebench run -r auto --target-ci 2%` against `edgebench run -r 5` on the ladder, interleaved:
the wall-time ratio (target <= 0.7 on a quiet machine) and how many cases reached the target.

--bare: the worker's timed loop alone (worker._measure_rep in a fresh process with no parent, no
profilers, no protocol) in place of `edgebench run`; --harness: `edgebench run` against that bare
loop. Together they say whether a gap to llama-bench is in the timed loop or in the harness around it.

--self: llama-bench against llama-bench, the same way (an A/A test): the spread of a ratio when
nothing differs, i.e. what this machine lets the default mode resolve.

All edgebench runs of one invocation share one --out folder (a user's reports/ store), so only the
first creates the store.

--internal: edgebench's perf_counter_ns timing of prefill/decode against llama.cpp's internal
counters (llama_perf_context) for the very same calls, in one process.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EDGEBENCH = [sys.executable, "-m", "edgebench.cli"]
LADDER = "F16,Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q3_K_M,Q2_K"


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="GGUF file (repeatable; default: --preset at --levels)")
    ap.add_argument("--preset", default="smollm-135m")
    ap.add_argument("--levels", default=None, help="default F16,Q8_0,Q4_K_M (--ladder, --auto: the 7-level ladder)")
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("-t", "--threads", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--flags", default="", help="more llama-bench flags for both tools, e.g. \"-fa 1 -d 256 -ub 256\"")
    ap.add_argument("--ladder", action="store_true", help="all levels in one command each: the wall-time ratio")
    ap.add_argument("--auto", action="store_true", help="-r auto against -r N (both edgebench)")
    ap.add_argument("--target-ci", default="2%", help="--auto: the target (as edgebench run --target-ci takes it)")
    ap.add_argument("--self", dest="self_check", action="store_true",
                    help="llama-bench against llama-bench (A/A): the noise floor of the ratios on this machine")
    ap.add_argument("--bare", action="store_true",
                    help="the worker's timed loop alone (no parent, no profilers) in place of `edgebench run`")
    ap.add_argument("--harness", action="store_true", help="`edgebench run` against the bare loop (no llama-bench)")
    ap.add_argument("--bare-child", help=argparse.SUPPRESS)  # one bare process: prints {model: {pp, tg}}
    ap.add_argument("--internal", action="store_true", help="edgebench's timer vs llama.cpp's internal counters")
    a = ap.parse_args()
    if a.bare_child:
        return a
    if not a.threads:
        from edgebench.machine.environment import physical_cores

        a.threads = physical_cores()
    if not a.model:
        from edgebench.models import synth_gguf

        levels = a.levels or (LADDER if a.ladder or a.auto else "F16,Q8_0,Q4_K_M")
        a.model = [str(synth_gguf.ensure_model(a.preset, q)) for q in levels.split(",")]
    return a


def _flags(a, reps: str | None = None) -> list[str]:
    return ["-p", str(a.n_prompt), "-n", str(a.n_gen), "-r", reps or str(a.reps), "-t", str(a.threads),
            *shlex.split(a.flags)]


def test_name(n_prompt: int, n_gen: int, depth: int = 0) -> str:
    """llama-bench's name of a test: pp512, tg128, pp512+tg128, and " @ d256" at a depth."""
    name = f"pp{n_prompt}+tg{n_gen}" if n_prompt and n_gen else f"pp{n_prompt}" if n_prompt else f"tg{n_gen}"
    return name + (f" @ d{depth}" if depth else "")


def _llama_bench(bench: Path, models: list[str], a) -> tuple[dict[str, dict[str, float]], float]:
    """{model file: {test name: avg t/s}} from one llama-bench command, and its wall time."""
    t0 = time.perf_counter()
    cmd = [str(bench)] + [x for m in models for x in ("-m", m)] + _flags(a) + ["-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    got: dict[str, dict[str, float]] = {}
    for row in json.loads(out):
        name = test_name(row["n_prompt"], row["n_gen"], row.get("n_depth", 0))
        got.setdefault(row["model_filename"], {})[name] = float(row["avg_ts"])
    return got, wall


def _edgebench(models: list[str], a, out: Path) -> tuple[dict[str, dict[str, float]], float]:
    """{model file: {test name: t/s}} as `edgebench show --format llama-bench` prints them (the very
    figures a user pastes next to llama-bench's), and the wall time of the `edgebench run`."""
    wall = _edgebench_run(models, a, out)
    shown = subprocess.run([*EDGEBENCH, "show", "latest", "--format", "llama-bench", "-o", str(out)],
                           capture_output=True, text=True, check=True).stdout
    lines = [l for l in shown.splitlines() if l.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    got: dict[str, dict[str, float]] = {}
    for line in lines[2:]:
        row = dict(zip(head, (c.strip() for c in line.strip("|").split("|"))))
        model = _match({"quant": row["model"].split()[-1]}, models)
        got.setdefault(model, {})[row["test"]] = float(row["t/s"].split()[0])
    return got, wall


def _edgebench_run(models: list[str], a, out: Path, reps: str | None = None, extra: tuple[str, ...] = ()) -> float:
    t0 = time.perf_counter()
    cmd = [*EDGEBENCH, "run"] + [x for m in models for x in ("-m", m)] + _flags(a, reps) + [
        "-o", str(out), "--no-report", *extra]
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - t0


def _edgebench_rows(models: list[str], a, out: Path, reps: str | None = None, extra: tuple[str, ...] = ()):
    """({model file: {"pp", "tg", "reps", "ci_pct", "stop"}}, wall time) of one `edgebench run`."""
    wall = _edgebench_run(models, a, out, reps, extra)
    shown = subprocess.run([*EDGEBENCH, "show", "latest", "--format", "json", "-o", str(out)],
                           capture_output=True, text=True, check=True).stdout
    got = {}
    for row in json.loads(shown):
        got[_match(row, models)] = {
            "pp": float(row["prefill_tok_s"]), "tg": float(row["decode_tok_s"]), "reps": row.get("reps_used"),
            "ci_pct": row.get("ci_pct"), "stop": row.get("reps_stop")}
    return got, wall


def _bare(models: list[str], a) -> tuple[dict[str, dict[str, float]], float]:
    """The worker's timed loop alone, one fresh process per model, as llama-bench's avg_ts counts."""
    t0, got = time.perf_counter(), {}
    for m in models:
        base = ["-p", str(a.n_prompt), "-n", str(a.n_gen), "-r", str(a.reps), "-t", str(a.threads)]
        out = subprocess.run([sys.executable, __file__, "--bare-child", m, *base], capture_output=True,
                             text=True, check=True).stdout
        fig = json.loads(out.strip().splitlines()[-1])
        got[m] = {test_name(a.n_prompt, 0): fig["pp"], test_name(0, a.n_gen): fig["tg"]}
    return got, time.perf_counter() - t0


def bare_child(a) -> None:
    """`_measure_rep` as the worker runs it (one untimed warmup rep, then -r reps of pp then tg from
    the depth), with no profiler, parent or protocol around it; prints {"pp": tok/s, "tg": tok/s}
    (means over reps of n / time, as llama-bench's avg_ts)."""
    from edgebench.backends.llama_cpp import LlamaCppBackend
    from edgebench.records import Case
    from edgebench.run.worker import _measure_rep

    case = Case(backend="llama-cpp", model=a.bare_child, n_prompt=a.n_prompt, n_gen=a.n_gen, reps=a.reps,
                n_threads=a.threads, test="split")
    be = LlamaCppBackend()
    info = be.load(case)
    rng = np.random.default_rng(0)
    _measure_rep(be, case, rng, info.n_vocab, [], -1)
    pp, tg = [], []
    for _ in range(a.reps):
        pre, steps = _measure_rep(be, case, rng, info.n_vocab, [], 0)
        if pre:
            pp.append(a.n_prompt / (pre / 1e9))
        if steps:
            tg.append(a.n_gen / (sum(steps) / 1e9))
    be.close()
    print(json.dumps({"pp": float(np.mean(pp)) if pp else None, "tg": float(np.mean(tg)) if tg else None}))


def _match(row: dict, models: list[str]) -> str:
    """The model file of a summary row: the one whose level is the row's quant."""
    (m,) = [m for m in models if Path(m).stem.endswith("-" + str(row["quant"]))] or [models[0]]
    return m


def _pct(v) -> str:
    return "-" if v is None else f"{float(v):.2f}%"


def _ci(v: list[float]) -> str:
    from edgebench.analysis.per_rep import t975

    if len(v) < 2:
        return f"{np.mean(v):.3f}"
    half = t975(len(v) - 1) * np.std(v, ddof=1) / np.sqrt(len(v))
    return f"{np.mean(v):.3f} [{np.mean(v) - half:.3f}, {np.mean(v) + half:.3f}]"


def against_llama_bench(a, out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from llama_tools import ensure_tool

    bench = ensure_tool("llama-bench")
    groups = [a.model] if a.ladder else [[m] for m in a.model]
    who = ("A/A: llama-bench against itself; " if a.self_check else "bare loop against edgebench run; "
           if a.harness else "bare loop against llama-bench; " if a.bare else "")
    print(f"{who}"
          f"llama-bench {bench}; {' '.join(_flags(a))}; {a.rounds} rounds, order flipped each round, "
          f"{'the ladder in one command' if a.ladder else 'one level per command'}")
    print(f"{'model':34} {'round':>5} {'test':>18} {'ours':>9} {'llama':>9} {'ratio':>7} {'wall ratio':>10}")
    ratios: dict[tuple[str, str], list[float]] = {}
    walls = []
    for rnd in range(a.rounds):
        for i, models in enumerate(groups):
            ours_cmd = (lambda: _bare(models, a)) if a.bare or a.harness else (lambda: _edgebench(models, a, out))
            theirs_cmd = ((lambda: _edgebench(models, a, out)) if a.harness else (lambda: _llama_bench(bench, models, a)))
            if a.self_check:  # the same tool twice: what the ratio does when nothing differs
                ours_cmd = theirs_cmd
            if (rnd + i) % 2:
                ours, w_ours = ours_cmd()
                theirs, w_theirs = theirs_cmd()
            else:
                theirs, w_theirs = theirs_cmd()
                ours, w_ours = ours_cmd()
            walls.append(w_ours / w_theirs)
            for m in models:
                tests = [t for t in theirs.get(m, {}) if t in ours.get(m, {})]
                missing = sorted(set(theirs.get(m, {})) ^ set(ours.get(m, {})))
                if missing:
                    print(f"  {Path(m).name}: tests only one tool printed: {', '.join(missing)}")
                for t in tests:
                    ratio = ours[m][t] / theirs[m][t]
                    ratios.setdefault((m, t), []).append(ratio)
                    wall = f"{w_ours / w_theirs:10.3f}" if m == models[-1] and t == tests[-1] else ""
                    print(f"{Path(m).name[:34]:34} {rnd:>5} {t:>18} {ours[m][t]:9.1f} {theirs[m][t]:9.1f} "
                          f"{ratio:7.3f} {wall}", flush=True)
            if a.ladder:
                print(f"  round {rnd}: ours {w_ours:.1f} s, theirs {w_theirs:.1f} s", flush=True)
    print("mean ratio over the rounds, with its 95% interval (t over rounds):")
    for (m, t), r in ratios.items():
        print(f"  {Path(m).name[:34]:34} {t:>18} {_ci(r)}")
    print(f"  wall ratio {_ci(walls)} (n={len(walls)})")


def auto_against_fixed(a, out: Path) -> None:
    print(f"edgebench -r auto --target-ci {a.target_ci} against -r {a.reps} on {len(a.model)} levels; "
          f"{a.rounds} rounds, order flipped each round")
    walls = []
    for rnd in range(a.rounds):
        runs = [("auto", ("--target-ci", a.target_ci)), ("fixed", ())]
        if rnd % 2:
            runs.reverse()
        got = {}
        for kind, extra in runs:
            got[kind] = _edgebench_rows(a.model, a, out, "auto" if kind == "auto" else None, extra)
        (auto, w_auto), (fixed, w_fixed) = got["auto"], got["fixed"]
        walls.append(w_auto / w_fixed)
        reached = sum(1 for v in auto.values() if v["stop"] == "target")
        print(f"round {rnd}: -r auto {w_auto:.1f} s, -r {a.reps} {w_fixed:.1f} s, ratio {w_auto / w_fixed:.3f}; "
              f"target reached on {reached}/{len(auto)} cases")
        for m, v in auto.items():
            f = fixed[m]
            print(f"  {Path(m).name[:30]:30} auto: {v['reps']} reps, ci {_pct(v['ci_pct'])} ({v['stop']}); "
                  f"pp {v['pp'] / f['pp']:.3f} tg {v['tg'] / f['tg']:.3f} of -r {a.reps}'s, whose ci is {_pct(f['ci_pct'])}",
                  flush=True)
    print(f"wall ratio auto / fixed {_ci(walls)} (n={len(walls)})")


def internal(a) -> None:
    from edgebench.backends.llama_cpp import LlamaCppBackend
    from edgebench.records import Case
    from edgebench.run.worker import _measure_rep

    case = Case(backend="llama-cpp", model=a.model[0], n_prompt=a.n_prompt, n_gen=a.n_gen, reps=a.reps,
                n_threads=a.threads)
    be = LlamaCppBackend()
    info = be.load(case)
    rng = np.random.default_rng(0)
    _measure_rep(be, case, rng, info.n_vocab, [], -1)
    clock = time.perf_counter_ns
    ours_p, ours_d, theirs_p, theirs_d = [], [], [], []
    for _ in range(a.reps):
        prompt = rng.integers(0, info.n_vocab, a.n_prompt).tolist()
        gen = rng.integers(0, info.n_vocab, a.n_gen).tolist()
        be.reset()
        be.perf_reset()
        t0 = clock()
        be.prefill(prompt)
        pre = clock() - t0
        steps = 0
        for tok in gen:
            t0 = clock()
            be.decode_step(tok)
            steps += clock() - t0
        perf = be.perf_context()
        ours_p.append(a.n_prompt / (pre / 1e9))
        ours_d.append(a.n_gen / (steps / 1e9))
        theirs_p.append(perf["n_p_eval"] / (perf["t_p_eval_ms"] / 1e3))
        theirs_d.append(perf["n_eval"] / (perf["t_eval_ms"] / 1e3))
    be.close()
    print(f"model {a.model[0]} ({info.quant}, {info.n_params / 1e6:.1f}M params), threads {a.threads}, "
          f"p={a.n_prompt} n={a.n_gen} reps={a.reps}")
    print(f"{'phase':8} {'edgebench tok/s':>16} {'llama.cpp tok/s':>16} {'ratio':>7}")
    for name, ours, theirs in (("prefill", ours_p, theirs_p), ("decode", ours_d, theirs_d)):
        o, t = float(np.mean(ours)), float(np.mean(theirs))
        print(f"{name:8} {o:16.2f} {t:16.2f} {o / t:7.3f}")


if __name__ == "__main__":
    args = _args()
    if args.bare_child:
        bare_child(args)
    elif args.internal:
        internal(args)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            (auto_against_fixed if args.auto else against_llama_bench)(args, Path(tmp) / "reports")
