"""Shared set-up for the benchmark scripts: a model path from argv or a built preset."""

from __future__ import annotations

import argparse
from pathlib import Path


def model_arg(description: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", help="GGUF file (default: the smollm-135m preset, built if needed)")
    ap.add_argument("--preset", default="smollm-135m")
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=32)
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("-t", "--threads", type=int, default=0)
    args = ap.parse_args()
    if not args.model:
        from edgebench.models import synth_gguf

        args.model = str(synth_gguf.ensure_model(args.preset, args.quant))
    if not args.threads:
        from edgebench.machine.environment import physical_cores

        args.threads = physical_cores()
    args.model = str(Path(args.model))
    return args


def loaded_backend(a: argparse.Namespace):
    """(backend, case, info, rng): llama.cpp loaded for the parsed arguments and warmed up once
    with the worker's own rep (untimed)."""
    import numpy as np

    from edgebench.backends.llama_cpp import LlamaCppBackend
    from edgebench.records import Case
    from edgebench.run.worker import _measure_rep

    case = Case(backend="llama-cpp", model=a.model, n_prompt=a.n_prompt, n_gen=a.n_gen, reps=a.reps, n_threads=a.threads)
    be = LlamaCppBackend()
    info = be.load(case)
    rng = np.random.default_rng(0)
    _measure_rep(be, case, rng, info.n_vocab, [], -1)
    return be, case, info, rng
