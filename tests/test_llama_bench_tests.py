"""llama-bench's tests and their meaning (issue 17 part 1): -p and -n are separate pp and tg tests,
each from the depth; -pg P,N decodes right after its prompt; every row names its test and the KV
positions it covered. Checked on the plan, then on what a worker really did (the fake backend's
cache fill after each timed phase), then on the real llama.cpp."""

from __future__ import annotations

import json

import pytest

from edgebench.cli import main
from edgebench.errors import InputError
from edgebench.records import Case, kv_positions, llama_bench_name
from edgebench.run import plan
from edgebench.run.spec import RunSpec, build_spec


def _tests(**options):
    spec = build_spec({"models": ["x.fake"], **options})
    return [(t["test"], t["n_prompt"], t["n_gen"]) for t in plan.tests(spec)]


def test_p_and_n_pair_up_into_llama_bench_tests():
    # llama-bench -p 512 -n 128 runs pp512 and tg128: one split case holds both
    assert _tests() == [("split", 512, 128)]
    # -p 64,128 -n 32: pp64, pp128, tg32, each once
    assert _tests(n_prompt=["64,128"], n_gen=["32"]) == [("split", 64, 32), ("split", 128, 0)]
    assert _tests(n_prompt=["0"]) == [("split", 0, 128)]  # generation only
    assert _tests(n_gen=["0"]) == [("split", 512, 0)]  # prompt only
    assert _tests(pg=["16,8", "32,4"], n_gen=["0"]) == [("split", 512, 0), ("pg", 16, 8), ("pg", 32, 4)]


@pytest.mark.parametrize("pg", ["16", "16,8,4", "a,b", "0,8", "16,-1"])
def test_a_bad_pg_is_one_clear_error(pg):
    with pytest.raises(InputError, match="-pg"):
        build_spec({"pg": [pg]})


def test_nothing_to_time_is_an_error():
    with pytest.raises(InputError, match="nothing to time"):
        plan.tests(build_spec({"models": ["x.fake"], "n_prompt": ["0"], "n_gen": ["0"]}))


def test_a_spec_stored_before_split_tests_expands_as_it_did():
    old = RunSpec.from_dict({"models": ["x.fake"], "sweep": {"n_prompt": [64, 128], "n_gen": [32]}})
    assert not old.split_tests
    assert [(t["test"], t["n_prompt"], t["n_gen"]) for t in plan.tests(old)] == [("pg", 64, 32), ("pg", 128, 32)]
    # and the key of a case stored then is unchanged, so --resume still finds its finished cases
    assert "test" not in json.loads(Case("fake", "m.fake").key())
    assert json.loads(Case("fake", "m.fake", test="split").key())["test"] == "split"


def test_names_and_positions_follow_llama_bench():
    assert llama_bench_name("split", 512, 128) == "pp512 tg128"
    assert llama_bench_name("split", 0, 128, 4096) == "tg128 @ d4096"
    assert llama_bench_name("pg", 512, 128) == "pp512+tg128"
    assert kv_positions("split", 512, 128, 100) == {"prefill": (100, 611), "decode": (100, 227)}
    assert kv_positions("pg", 512, 128, 100) == {"prefill": (100, 611), "decode": (612, 739)}
    assert kv_positions("split", 0, 8) == {"prefill": None, "decode": (0, 7)}
    # a split case's context holds the longer of its two tests, not their sum
    assert Case("fake", "m", n_prompt=512, n_gen=128, test="split").tokens_needed == 512
    assert Case("fake", "m", n_prompt=512, n_gen=128, depth=64, test="pg").tokens_needed == 704


def test_what_the_worker_timed_is_what_the_row_says(tmp_path, capsys):
    model = tmp_path / "m.fake"
    model.write_text(json.dumps({"prefill_us_per_token": 10, "decode_us": 100}))
    out = tmp_path / "out"
    code = main(["run", "-m", str(model), "--backend", "fake", "-p", "16", "-n", "4", "-pg", "8,2", "-d", "0,32",
                 "-r", "2", "-o", str(out), "--no-report"])
    assert code == 0, capsys.readouterr().err
    from edgebench.analysis.summary import summarize_run
    from edgebench.store.database import Store

    store = Store(out, create=False)
    run_id = store.list_runs()[0].run_id
    rows = {r["test"]: r for r in summarize_run(store, run_id)}
    assert set(rows) == {"pp16 tg4", "pp16 tg4 @ d32", "pp8+tg2", "pp8+tg2 @ d32"}
    samples = store.get_samples(run_id)
    per_token = 1024  # FakeBackend.KV_BYTES_PER_TOKEN: its cache fill after each phase, in bytes
    expected = {"pp16 tg4": (16, 4), "pp16 tg4 @ d32": (48, 36), "pp8+tg2": (8, 10), "pp8+tg2 @ d32": (40, 42)}
    for name, (after_prefill, after_decode) in expected.items():
        s = samples[(samples["case_id"] == rows[name]["case_id"]) & (samples["metric"] == "kv_used_bytes")]
        filled = {ph: set(s[s["phase"] == ph]["value"] / per_token) for ph in ("prefill", "decode")}
        assert filled == {"prefill": {after_prefill}, "decode": {after_decode}}, name
    assert rows["pp16 tg4 @ d32"]["decode_pos"] == "32-35" and rows["pp16 tg4 @ d32"]["prefill_pos"] == "32-47"
    assert rows["pp8+tg2 @ d32"]["decode_pos"] == "40-41"
    assert all(r["prefill_tok_s"] and r["decode_tok_s"] and r["ttft_ms"] for r in rows.values())


def test_llama_cpp_decodes_a_tg_test_from_the_depth(tiny_gguf, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", "-m", tiny_gguf["F16"], "-p", "32", "-n", "8", "-pg", "32,8", "-r", "1", "-t", "1",
                 "-o", str(out), "--no-report"])
    assert code == 0, capsys.readouterr().err
    from edgebench.analysis.summary import summarize_run
    from edgebench.store.database import Store

    store = Store(out, create=False)
    rows = {r["test"]: r for r in summarize_run(store, store.list_runs()[0].run_id)}
    assert rows["pp32 tg8"]["decode_pos"] == "0-7" and rows["pp32+tg8"]["decode_pos"] == "32-39"
    # llama.cpp's own cache fill after the decode steps says where they ran
    kv = {k: r["kv_used_bytes"] for k, r in rows.items()}
    assert kv["pp32 tg8"] > 0 and kv["pp32+tg8"] > kv["pp32 tg8"]
