"""Weights counted once: weights_bytes == llama_model_size, the CPU_REPACK copy as repack_bytes."""

import pytest

from edgebench.backends.llama_memory import parse_buffer_sizes, split_weights
from edgebench.records import Case

MiB = 2**20


def test_split_mapped_and_repack_counts_each_tensor_once():
    # The SmolLM-135M Q4_K_M shape: the mapped range spans the file, CPU_REPACK holds some tensors again.
    raw = {"CPU_Mapped": 103672709, "CPU_REPACK": 7958692}
    w, r = split_weights(raw, 103668480)
    assert sum(w.values()) == 103668480
    assert w == {"CPU_Mapped": 103668480 - 7958692, "CPU_REPACK": 7958692}
    assert r == {"CPU_REPACK": 7958692}


def test_split_allocated_buffers_and_gpu():
    # No mmap: allocations only, nothing held twice; the log's rounding goes to the largest buffer.
    w, r = split_weights({"CPU": 10 * MiB, "CPU_REPACK": 3 * MiB}, 13 * MiB - 1000)
    assert sum(w.values()) == 13 * MiB - 1000 and w["CPU_REPACK"] == 3 * MiB and r == {}
    # Offloaded: CUDA0 as allocated, the mapped file the rest.
    w, r = split_weights({"CPU_Mapped": 50 * MiB, "CUDA0": 40 * MiB}, 80 * MiB)
    assert w == {"CPU_Mapped": 40 * MiB, "CUDA0": 40 * MiB} and r == {}
    assert split_weights({}, 123) == ({}, {})


@pytest.fixture(scope="module")
def backend():
    from edgebench.backends.llama_cpp import LlamaCppBackend

    be = LlamaCppBackend()
    yield be
    be.close()


def _avx2(backend) -> bool:
    return b"AVX2 = 1" in backend._ll.llama_print_system_info()


@pytest.mark.parametrize("quant", ["F16", "Q4_K_M", "Q4_0"])
def test_weights_bytes_equals_llama_model_size(tiny_gguf, model_cache, backend, quant):
    from edgebench.models import synth_gguf

    path = tiny_gguf.get(quant) or synth_gguf.ensure_model("tiny", quant, cache=model_cache)
    start = len(backend.log_lines())
    info = backend.load(Case(backend="llama-cpp", model=str(path), n_prompt=8, n_gen=2, n_threads=1))
    try:
        raw = parse_buffer_sizes(backend.log_lines()[start:])["weights"]
        mem = backend.memory()
        size = backend._ll.llama_model_size(backend.model)
        assert mem.weights_bytes == size == info.model_bytes
        if quant == "F16":
            assert "CPU_REPACK" not in raw and mem.repack_bytes == 0
        elif _avx2(backend):  # Q4_K and Q4_0 are repacked on AVX2: held twice, counted once
            assert raw["CPU_REPACK"] > 0 and mem.repack_by_buffer == {"CPU_REPACK": raw["CPU_REPACK"]}
            assert sum(raw.values()) > size
    finally:
        backend.close()


def test_summary_weights_repack_and_kv_share(tiny_gguf, tmp_path):
    from edgebench.analysis import summary
    from edgebench.present.report import _roofline
    from edgebench.run.plan import ModelRef
    from edgebench.run.runner import run_cases
    from edgebench.store.database import Store

    store = Store(tmp_path)
    store.create_run("wb", "test", {}, {})
    m = str(tiny_gguf["Q4_K_M"])
    run_cases(store, "wb", [(ModelRef("llama-cpp", path=m), Case(backend="llama-cpp", model=m, n_prompt=16, n_gen=2,
                                                                 reps=1, n_threads=1))], tmp_path / "wb")
    (row,) = summary.summarize_run(store, "wb")
    assert row["status"] == "ok", row.get("error")
    assert row["weights_bytes"] == row["model_bytes"]
    assert row["repack_bytes"] is None or 0 < row["repack_bytes"] < row["weights_bytes"]
    total = row["weights_bytes"] + row["kv_bytes"] + row["compute_bytes"]
    assert row["kv_share"] == pytest.approx(row["kv_bytes"] / total)
    roof = _roofline(dict(row, decode_tok_s=100.0), 10.0)
    assert roof["bytes_per_token"] < row["weights_bytes"] + row["kv_bytes"]
    assert roof["bytes_per_token"] >= row["weights_bytes"]


def test_roofline_bounds_a_stored_double_count_by_the_model_size():
    from edgebench.present.report import _roofline

    row = {"weights_bytes": 111631401.0, "model_bytes": 103668480, "decode_tok_s": 100.0, "n_prompt": 16, "n_gen": 4}
    assert _roofline(row, 10.0)["bytes_per_token"] == 103668480
