"""Writes the golden run folders that tests/test_compare.py reads. Run once, commit the output:

    python tests/data/golden/make_golden.py

Timings are synthetic (a seeded generator, not a clock), so the files never depend on the machine:
per-rep noise of 1% and per-step jitter of 2% around a fixed speed, as a quiet machine shows.
Folders: base; rerun (same speed, new noise); slow10 (every time 1/0.9 longer: tok/s -10%);
other_device (base's speed on another device); new_model (another model name, 10% faster).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgebench.analysis.summary import export_run
from edgebench.records import Case, Sample
from edgebench.store.database import Store

HERE = Path(__file__).parent
N_PROMPT, N_GEN, REPS = 64, 16, 5
QUANTS = {"Q4_K_M": (4.85, 2.0e6, 0.10e6), "Q8_0": (8.50, 3.0e6, 0.12e6)}  # bpw, decode ns/step, prefill ns/token
N_PARAMS = 134_515_008


def case_samples(rng, decode_ns: float, prefill_ns_tok: float, weights: int, speed: float) -> list[Sample]:
    kv = 2 * 30 * 256 * 3 * 64 * 2  # 2 x n_layer x n_ctx x n_head_kv x head_dim x f16
    out = [Sample(-1, "load", "load_ns", float(rng.normal(2.5e8, 1e7))),
           Sample(-1, "load", "weights_bytes", weights, label="CPU"),
           Sample(-1, "load", "kv_bytes", kv, label="CPU"),
           Sample(-1, "load", "compute_bytes", 8_650_752, label="CPU"),
           Sample(-1, "load", "rss_peak_bytes", float(weights + 60e6 * (1 + rng.normal(0, 0.002))))]
    for rep in range(REPS):
        f = rng.lognormal(0, 0.01) / speed
        out.append(Sample(rep, "prefill", "prefill_ns", float(N_PROMPT * prefill_ns_tok * f)))
        out.append(Sample(rep, "prefill", "kv_used_bytes", kv // 256 * N_PROMPT))
        for i in range(N_GEN):
            out.append(Sample(rep, "decode", "decode_step_ns", float(decode_ns * f * rng.lognormal(0, 0.02)), idx=i))
        out.append(Sample(rep, "decode", "kv_used_bytes", kv // 256 * (N_PROMPT + N_GEN)))
        for phase in ("prefill", "decode"):
            out.append(Sample(rep, phase, "rss_peak_bytes", float(weights + 40e6 * (1 + rng.normal(0, 0.002)))))
    return out


def make(store: Store, name: str, seed: int, device: str = "ci-box", model: str = "smollm-135m",
         speed: float = 1.0, out_root: Path = HERE) -> str:
    """Store run ``golden-<name>`` and write its folder under ``out_root``; returns the run id."""
    rng = np.random.default_rng(seed)
    run_id = f"golden-{name}"
    store.create_run(run_id, device, {"golden": True}, {"note": "synthetic golden data (make_golden.py)"})
    for case_id, (quant, (bpw, dec, pre)) in enumerate(QUANTS.items()):
        weights = int(N_PARAMS * bpw / 8)
        case = Case(backend="llama-cpp", model=f"/models/{model}-{quant}.gguf", n_prompt=N_PROMPT, n_gen=N_GEN,
                    reps=REPS, n_threads=2)
        info = {"model": {"model_name": model, "quant": quant, "bpw": bpw, "n_params": N_PARAMS,
                          "model_bytes": weights, "n_ctx_runtime": 256, "model_sha256": f"{model}-{quant}".ljust(64, "0")},
                "versions": {"llama_cpp_python": "0.3.36"}}
        store.save_case(run_id, case_id, case, "ok", "", info, case_samples(rng, dec, pre, weights, speed), 0.0, 1.0)
    store.finish_run(run_id, "complete")
    out = out_root / name
    shutil.rmtree(out, ignore_errors=True)
    export_run(store, run_id, out)
    return run_id


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(tmp)
        make(store, "base", 1)
        make(store, "rerun", 2)
        make(store, "slow10", 3, speed=0.9)
        make(store, "other_device", 4, device="orin-nano-8gb")
        make(store, "new_model", 5, model="smollm2-135m", speed=1.1)
        store.engine.dispose()


if __name__ == "__main__":
    main()
