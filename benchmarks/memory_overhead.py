"""Overhead of the memory sampler on the measured phases: tok/s with the RSS sampler thread
running vs not, interleaved rep by rep in one process (so drift hits both alike). Run by hand:

    python benchmarks/memory_overhead.py [--model FILE.gguf] [-p 128 -n 32 -r 10 -t 2]

Prints on/off ratios; the target is >= 0.98.
"""

from __future__ import annotations

import numpy as np
from _common import loaded_backend, model_arg

from edgebench.profilers.memory import MemoryProfiler
from edgebench.run.worker import _measure_rep


def main() -> None:
    a = model_arg(__doc__.splitlines()[0])
    be, case, info, rng = loaded_backend(a)
    res = {"off": ([], []), "on": ([], [])}
    for rep in range(a.reps):
        for mode in (("off", "on") if rep % 2 else ("on", "off")):
            profs = []
            if mode == "on":
                mp = MemoryProfiler()
                mp.attach(be)
                profs = [mp]
            pre, steps = _measure_rep(be, case, rng, info.n_vocab, profs, rep)
            for p in profs:
                p.detach(be)
                p.collect()
            res[mode][0].append(a.n_prompt / (pre / 1e9))
            res[mode][1].append(a.n_gen / (sum(steps) / 1e9))
    be.close()
    print(f"model {a.model} ({info.quant}), threads {a.threads}, p={a.n_prompt} n={a.n_gen}, {a.reps} interleaved reps each")
    print(f"{'phase':8} {'sampler off tok/s':>18} {'sampler on tok/s':>17} {'on/off':>7}")
    for i, name in enumerate(("prefill", "decode")):
        off, on = float(np.median(res["off"][i])), float(np.median(res["on"][i]))
        print(f"{name:8} {off:18.2f} {on:17.2f} {on / off:7.3f}")


if __name__ == "__main__":
    main()
