"""The llama.cpp backend end to end on the tiny synthetic model (real llama.cpp, no mocks)."""

import pytest

from edgebench.backends.llama_cpp import LlamaCppBackend, parse_buffer_sizes
from edgebench.models.memory_model import kv_bytes
from edgebench.records import Case
from edgebench.run.runner import run_worker


@pytest.fixture(scope="module")
def backend():
    be = LlamaCppBackend()
    yield be
    be.close()


def test_prefill_decode_and_reset_move_the_cache(tiny_gguf, backend):
    case = Case(backend="llama-cpp", model=str(tiny_gguf["Q4_K_M"]), n_prompt=40, n_gen=3, n_threads=2, n_batch=16, n_ubatch=16)
    info = backend.load(case)
    assert info.quant == "Q4_K_M" and info.n_ctx_runtime == 256 and info.n_layer == 2
    assert 4.0 < info.bpw < 6.0
    backend.reset()
    backend.prefill(list(range(1, 41)))  # 3 chunks of n_batch=16
    assert backend.n_cached() == 40
    backend.decode_step(7)
    assert backend.n_cached() == 41
    per_token = kv_bytes(info.n_layer, 256, info.n_head_kv, info.head_dim) // 256
    assert backend.kv_used_bytes() == 41 * per_token
    backend.reset()
    assert backend.n_cached() == 0
    backend.close()


@pytest.mark.parametrize("cache_type", ["f16", "q8_0"])
@pytest.mark.parametrize("n_ctx", [256, 1024])
def test_runtime_kv_equals_analytic_kv(tiny_gguf, backend, cache_type, n_ctx):
    case = Case(backend="llama-cpp", model=str(tiny_gguf["Q8_0"]), n_prompt=8, n_gen=1, n_ctx=n_ctx,
                cache_type_k=cache_type, cache_type_v=cache_type, flash_attn="on" if cache_type != "f16" else "auto")
    info = backend.load(case)
    runtime = backend.memory().kv_bytes
    analytic = kv_bytes(info.n_layer, n_ctx, info.n_head_kv, info.head_dim, cache_type, cache_type)
    # llama.cpp logs MiB with two decimals: agreement is exact at that precision
    assert round(runtime / 2**20, 2) == round(analytic / 2**20, 2)
    assert backend.memory().weights_bytes > 0 and backend.memory().compute_bytes > 0
    backend.close()


def test_buffer_size_parser_on_real_log_lines(tiny_gguf, backend):
    backend.load(Case(backend="llama-cpp", model=str(tiny_gguf["F16"]), n_prompt=8, n_gen=1))
    lines = backend.log_lines()
    assert any("KV buffer size" in l for l in lines)
    parsed = parse_buffer_sizes(lines)
    assert parsed["kv"] and parsed["compute"] and parsed["weights"]
    backend.close()


def test_parser_takes_every_buffer_kind_and_ignores_noise():
    lines = [
        "load_tensors:   CPU_Mapped model buffer size =   128.50 MiB",
        "load_tensors:        CUDA0 model buffer size =  1024.00 MiB",
        "llama_kv_cache:      CUDA0 KV buffer size =    48.00 MiB",
        "llama_context:        CPU  output buffer size =     0.19 MiB",
        "llama_context:      CUDA0 compute buffer size =   300.75 MiB",
        "llama_context:  CUDA_Host compute buffer size =    12.01 MiB",
        "some other line = 3 MiB",
    ]
    p = parse_buffer_sizes(lines)
    assert p["weights"] == {"CPU_Mapped": round(128.5 * 2**20), "CUDA0": 1024 * 2**20}
    assert p["kv"] == {"CUDA0": 48 * 2**20}
    assert p["compute"] == {"CUDA0": round(300.75 * 2**20), "CUDA_Host": round(12.01 * 2**20)}
    assert p["output"] == {"CPU": round(0.19 * 2**20)}


def test_worker_end_to_end_with_memory_timeline(tiny_gguf, tmp_path):
    case = Case(backend="llama-cpp", model=str(tiny_gguf["Q4_K_M"]), n_prompt=32, n_gen=8, reps=2, n_threads=2)
    res = run_worker(case, tmp_path / "log")
    assert res.status == "ok", res.error
    m = [s.metric for s in res.samples]
    assert m.count("prefill_ns") == 2 and m.count("decode_step_ns") == 16
    assert "kv_bytes" in m and "weights_bytes" in m and "compute_bytes" in m and "rss_peak_bytes" in m
    assert res.info["model"]["quant"] == "Q4_K_M"
    assert res.info["versions"]["llama_cpp_python"] == "0.3.36"
    used = {s.phase: s.value for s in res.samples if s.metric == "kv_used_bytes" and s.rep == 1}
    assert used["decode"] > used["prefill"] > 0


def test_kv_share_rises_with_context(tiny_gguf, tmp_path):
    from edgebench.analysis import summary
    from edgebench.run.plan import ModelRef
    from edgebench.run.runner import run_cases
    from edgebench.store.database import Store

    store = Store(tmp_path)
    store.create_run("ctx", "test", {}, {})
    m = str(tiny_gguf["Q4_K_M"])
    planned = [(ModelRef("llama-cpp", path=m), Case(backend="llama-cpp", model=m, n_prompt=16, n_gen=2, reps=1, n_ctx=c))
               for c in (256, 2048)]
    run_cases(store, "ctx", planned, tmp_path / "ctx")
    rows = summary.summarize_run(store, "ctx")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[1]["kv_bytes"] == 8 * rows[0]["kv_bytes"]
    assert rows[1]["kv_share"] > rows[0]["kv_share"]
    assert rows[0]["synthetic"] is True  # a preset's file given by path still has random weights


def test_a_real_model_is_not_marked_synthetic(real_gguf, tmp_path):
    from edgebench.analysis import summary
    from edgebench.run.plan import ModelRef
    from edgebench.run.runner import run_cases
    from edgebench.store.database import Store

    store = Store(tmp_path)
    store.create_run("real", "test", {}, {})
    case = Case(backend="llama-cpp", model=str(real_gguf), n_prompt=8, n_gen=2, reps=1, n_threads=2)
    run_cases(store, "real", [(ModelRef("llama-cpp", path=str(real_gguf)), case)], tmp_path / "real")
    (row,) = summary.summarize_run(store, "real")
    assert row["status"] == "ok" and row["synthetic"] is False


def test_case_that_cannot_fit_is_refused_not_started(tiny_gguf, tmp_path):
    from edgebench.models.memory_model import fit_problem
    from edgebench.run.plan import ModelRef
    from edgebench.run.runner import run_cases
    from edgebench.store.database import Store

    m = str(tiny_gguf["Q4_K_M"])
    small = Case(backend="llama-cpp", model=m, n_prompt=16, n_gen=2, reps=1)
    huge = Case(backend="llama-cpp", model=m, n_prompt=16, n_gen=2, reps=1, n_ctx=1 << 20)
    assert fit_problem(small, 8 * 2**30) is None
    reason = fit_problem(huge, 512 * 2**20)
    assert reason and "does not fit the device's 0.50 GiB" in reason
    store = Store(tmp_path)
    store.create_run("fit", "test", {}, {})
    counts = run_cases(store, "fit", [(ModelRef("llama-cpp", path=m), c) for c in (small, huge)], tmp_path / "fit",
                       precheck=lambda c: fit_problem(c, 512 * 2**20))
    assert counts == {"ok": 1, "failed": 0, "skipped": 1}
    cases = store.get_cases("fit")
    assert cases[1]["status"] == "skipped" and "does not fit" in cases[1]["error"]
    assert not (tmp_path / "fit" / "logs" / "case-001.log").exists()  # never started


def test_compute_estimate_is_near_the_runtime_buffer(tiny_gguf, backend):
    from edgebench.models.memory_model import compute_bytes_estimate
    from edgebench.models.presets import PRESETS

    p = PRESETS["tiny"]
    for n_ctx in (256, 2048):
        backend.load(Case(backend="llama-cpp", model=str(tiny_gguf["F16"]), n_prompt=8, n_gen=1, n_ctx=n_ctx))
        runtime = backend.memory().compute_bytes
        est = compute_bytes_estimate(p.n_vocab, p.n_embd, p.n_ff, p.n_head, n_ctx, 512, flash_attn=True)
        backend.close()
        assert 0.5 < est / runtime < 2.0, (n_ctx, est, runtime)
