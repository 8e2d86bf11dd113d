"""Fidelity: edgebench's prefill / decode tok/s next to llama.cpp's own internal timings for the
very same calls (llama_perf_context, no_perf off), as ratios. Run by hand:

    python benchmarks/fidelity.py [--model FILE.gguf] [-p 128 -n 32 -r 5 -t 2]

A ratio near 1.00 means the Python-side timing (perf_counter_ns around llama_decode +
llama_synchronize, through ctypes) adds nothing material to what llama.cpp measures inside.
"""

from __future__ import annotations

import time

import numpy as np
from _common import loaded_backend, model_arg


def main() -> None:
    a = model_arg(__doc__.splitlines()[0])
    be, case, info, rng = loaded_backend(a)
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
    print(f"model {a.model} ({info.quant}, {info.n_params / 1e6:.1f}M params), threads {a.threads}, "
          f"p={a.n_prompt} n={a.n_gen} reps={a.reps}")
    print(f"{'phase':8} {'edgebench tok/s':>16} {'llama.cpp tok/s':>16} {'ratio':>7}")
    for name, ours, theirs in (("prefill", ours_p, theirs_p), ("decode", ours_d, theirs_d)):
        o, t = float(np.mean(ours)), float(np.mean(theirs))
        print(f"{name:8} {o:16.2f} {t:16.2f} {o / t:7.3f}")


if __name__ == "__main__":
    main()
