"""Fidelity: edgebench's figures next to llama.cpp's own, as ratios measured in one run. Run by hand.

    python3 benchmarks/fidelity.py [--levels F16,Q8_0,Q4_K_M] [-p 512 -n 128 -r 5 -t 2] [--rounds 2]
    python3 benchmarks/fidelity.py --model a.gguf --model b.gguf
    python3 benchmarks/fidelity.py --internal [-p 128 -n 32]

Default: `edgebench run` and llama.cpp's llama-bench (built from the sdist of the installed
llama-cpp-python: benchmarks/llama_tools.py) on the same files with the same flags, interleaved
(the order flips every round), each a fresh process as a user runs it. Prints edgebench /
llama-bench for pp and tg per level and round (target 1.00 +- 0.03 at llama-bench's defaults), and
the wall time of the two whole commands (issue 17: edgebench at most 1.10x).

--internal: edgebench's perf_counter_ns timing of prefill/decode against llama.cpp's internal
counters (llama_perf_context) for the very same calls, in one process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

EDGEBENCH = [sys.executable, "-m", "edgebench.cli"]


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="GGUF file (repeatable; default: --preset at --levels)")
    ap.add_argument("--preset", default="smollm-135m")
    ap.add_argument("--levels", default="F16,Q8_0,Q4_K_M")
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("-t", "--threads", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--internal", action="store_true", help="edgebench's timer vs llama.cpp's internal counters")
    a = ap.parse_args()
    if not a.threads:
        from edgebench.machine.environment import physical_cores

        a.threads = physical_cores()
    if not a.model:
        from edgebench.models import synth_gguf

        a.model = [str(synth_gguf.ensure_model(a.preset, q)) for q in a.levels.split(",")]
    return a


def _llama_bench(bench: Path, model: str, a) -> tuple[dict[str, float], float]:
    t0 = time.perf_counter()
    out = subprocess.run([str(bench), "-m", model, "-p", str(a.n_prompt), "-n", str(a.n_gen), "-r", str(a.reps),
                          "-t", str(a.threads), "-o", "json"], capture_output=True, text=True, check=True).stdout
    wall = time.perf_counter() - t0
    got = {}
    for row in json.loads(out):
        test = "pp" if row["n_prompt"] and not row["n_gen"] else "tg"
        got[test] = float(row["avg_ts"])
    return got, wall


def _edgebench(model: str, a, out: Path) -> tuple[dict[str, float], float]:
    t0 = time.perf_counter()
    subprocess.run([*EDGEBENCH, "run", "-m", model, "-p", str(a.n_prompt), "-n", str(a.n_gen), "-r", str(a.reps),
                    "-t", str(a.threads), "-o", str(out), "--no-report"], capture_output=True, check=True)
    wall = time.perf_counter() - t0
    shown = subprocess.run([*EDGEBENCH, "show", "latest", "--format", "json", "-o", str(out)],
                           capture_output=True, text=True, check=True).stdout
    (row,) = json.loads(shown)
    return {"pp": float(row["prefill_tok_s"]), "tg": float(row["decode_tok_s"])}, wall


def against_llama_bench(a) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from llama_tools import ensure_tool

    bench = ensure_tool("llama-bench")
    print(f"llama-bench {bench}; -p {a.n_prompt} -n {a.n_gen} -r {a.reps} -t {a.threads}; {a.rounds} rounds, "
          "order flipped each round")
    print(f"{'model':34} {'round':>5} {'pp ours':>9} {'pp llama':>9} {'pp ratio':>8} {'tg ours':>8} {'tg llama':>8} "
          f"{'tg ratio':>8} {'wall ratio':>10}")
    ratios: dict[str, list[float]] = {"pp": [], "tg": [], "wall": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(a.rounds):
            for i, model in enumerate(a.model):
                out = Path(tmp) / f"r{rnd}-{i}"
                if (rnd + i) % 2:
                    ours, w_ours = _edgebench(model, a, out)
                    theirs, w_theirs = _llama_bench(bench, model, a)
                else:
                    theirs, w_theirs = _llama_bench(bench, model, a)
                    ours, w_ours = _edgebench(model, a, out)
                pp, tg, wall = ours["pp"] / theirs["pp"], ours["tg"] / theirs["tg"], w_ours / w_theirs
                for k, v in (("pp", pp), ("tg", tg), ("wall", wall)):
                    ratios[k].append(v)
                print(f"{Path(model).name[:34]:34} {rnd:>5} {ours['pp']:9.1f} {theirs['pp']:9.1f} {pp:8.3f} "
                      f"{ours['tg']:8.1f} {theirs['tg']:8.1f} {tg:8.3f} {wall:10.3f}", flush=True)
    for k, v in ratios.items():
        print(f"{k:5} ratio: mean {np.mean(v):.3f}  min {np.min(v):.3f}  max {np.max(v):.3f}  (n={len(v)})")


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
    internal(args) if args.internal else against_llama_bench(args)
