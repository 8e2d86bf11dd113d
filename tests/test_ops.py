"""Per-op time attribution: the llama.cpp op tracer and the ops profiler on the tiny synthetic model
(real llama.cpp, no mocks), and opstats on hand-made samples (exact shares). No timing asserts."""

import pandas as pd
import pytest

from edgebench.analysis import ops as opstats
from edgebench.backends.ggml_ctypes import NOOP_OPS, GgmlLib
from edgebench.backends.llama_cpp import LlamaCppBackend
from edgebench.profilers.ops import OpsProfiler
from edgebench.records import METRICS, OP_CLASSES, Case, Sample
from edgebench.run.runner import run_worker

N_PROMPT, N_GEN, REPS = 16, 3, 2


@pytest.fixture(scope="module")
def traced(tiny_gguf):
    """The ops profiler driven as the worker drives it: (backend, case, info, events, samples, tracer)."""
    case = Case(backend="llama-cpp", model=str(tiny_gguf["Q4_K_M"]), n_prompt=N_PROMPT, n_gen=N_GEN,
                n_threads=2, reps=REPS)
    be = LlamaCppBackend()
    info = be.load(case)
    prof = OpsProfiler()
    prof.attach(be)
    tracer = be._tracer
    for rep in range(REPS):
        be.reset()
        be.prefill(list(range(40, 40 + case.depth + 5)))  # untimed filler outside any phase: not traced
        be.reset()
        with prof.phase("prefill", rep):
            be.prefill(list(range(1, N_PROMPT + 1)))
        with prof.phase("decode", rep):
            for tok in range(N_GEN):
                be.decode_step(tok + 3)
    events = list(tracer.events())
    prof.detach(be)
    samples = prof.collect()
    yield be, case, info, events, samples, tracer, prof
    be.close()


def _df(samples):
    return pd.DataFrame([s.to_dict() for s in samples])


def test_layout_of_ggml_tensor_matches_the_running_library():
    GgmlLib()  # raises GgmlLayoutError when the struct mirror and the library disagree


def test_ops_profiler_contract():
    assert OpsProfiler.name == "ops" and OpsProfiler.requires == frozenset({"ops"}) and OpsProfiler.intrusive
    assert "ops" in LlamaCppBackend.capabilities
    assert {"op_ns", "op_typical_ns", "op_count", "node_ns", "op_launch_ns", "profiled_ns"} <= set(METRICS)


def test_decode_and_prefill_matmuls_are_told_apart(traced):
    _, _, info, events, _, _, _ = traced
    dec = [e for e in events if e.phase == "decode"]
    pre = [e for e in events if e.phase == "prefill"]
    assert dec and pre
    assert {e.rep for e in dec} == {e.rep for e in pre} == set(range(REPS))
    dec_mm = [e for e in dec if e.op == "MUL_MAT"]
    assert dec_mm and all(e.op_class == "mul_mat_vec" for e in dec_mm)
    pre_mm = [e for e in pre if e.op == "MUL_MAT"]
    assert any(e.op_class == "mul_mat" for e in pre_mm)
    # Prefill keeps only the last token after the last layer's attention: its FFN and the output
    # projection see one column, and nothing else does.
    last = info.n_layer - 1
    one_col = {e.name for e in pre_mm if e.op_class == "mul_mat_vec"}
    # (this llama.cpp names the down projection's output ffn_out-<layer>)
    assert one_col <= {f"ffn_gate-{last}", f"ffn_up-{last}", f"ffn_out-{last}", f"ffn_down-{last}", "result_output"}
    assert "result_output" in one_col
    # Per step, every layer runs the same ops: counts are whole multiples of the steps.
    assert len(dec_mm) % (N_GEN * REPS) == 0


def test_op_and_node_names_come_from_ggml(traced):
    _, _, info, events, _, _, _ = traced
    ops = {e.op for e in events}
    assert {"MUL_MAT", "RMS_NORM", "ROPE", "GET_ROWS", "SET_ROWS", "ADD", "MUL"} <= ops
    assert ops & {"FLASH_ATTN_EXT", "SOFT_MAX"}
    assert ops & {"SWIGLU", "SILU", "GLU"}
    names = {e.name for e in events}
    assert {"ffn_gate-0", "Qcur-0", f"attn_out-{info.n_layer - 1}", "result_output"} <= names
    assert names & {"ffn_down-0", "ffn_out-0"}
    assert all(e.op_class in OP_CLASSES for e in events if not e.phase.startswith("launch"))
    assert all(isinstance(e.ns, int) and e.ns >= 0 for e in events)
    # The norm weight multiply right after RMS_NORM is filed under norm (the untraced CPU backend
    # fuses the pair); other MULs stay elementwise.
    mul_norm = {e.name for e in events if e.op == "MUL" and e.op_class == "norm"}
    assert "attn_norm-0" in mul_norm and "result_norm" in mul_norm
    assert any(e.op_class == "other" for e in events if e.op in NOOP_OPS)


def test_launch_probe_runs_after_each_phase(traced):
    _, _, _, events, samples, _, _ = traced
    probes = {(e.phase, e.rep) for e in events if e.phase.startswith("launch/")}
    assert probes == {(f"launch/{p}", r) for p in ("prefill", "decode") for r in range(REPS)}
    assert {(e.phase, e.rep) for e in events if e.phase.startswith("launch1/")} == \
        {(f"launch1/{p}", r) for p in ("prefill", "decode") for r in range(REPS)}
    assert {e.op for e in events if e.phase.startswith("launch1/")} == {"SCALE"}  # one task in ggml
    for metric in ("op_launch_ns", "op_launch1_ns"):  # all threads, and one thread
        launch = [s for s in samples if s.metric == metric]
        assert {(s.phase, s.rep) for s in launch} == {(p, r) for p in ("prefill", "decode") for r in range(REPS)}
        assert all(s.value > 0 for s in launch)


def test_profiler_samples_and_shares(traced):
    _, _, _, events, samples, _, prof = traced
    df = _df(samples)
    assert set(df["metric"]) == {"op_ns", "op_typical_ns", "op_count", "node_ns", "op_launch_ns", "op_launch1_ns"}
    ops = df[df["metric"] == "op_ns"]
    assert set(ops["phase"]) == {"prefill", "decode"} and set(ops["rep"]) == set(range(REPS))
    assert ops["label"].str.contains("|", regex=False).all()
    # op_ns sums every traced node; op_count counts them.
    traced_nodes = [e for e in events if e.phase in ("prefill", "decode")]
    assert ops["value"].sum() == sum(e.ns for e in traced_nodes)
    assert df[df["metric"] == "op_count"]["value"].sum() == len(traced_nodes)
    for corrected in (True, False):
        shares = opstats.class_shares(df, corrected=corrected)
        assert set(shares) == {"prefill", "decode"}
        for sh in shares.values():
            assert abs(sum(sh.values()) - 1.0) < 1e-9
            assert all(0.0 <= v <= 1.0 for v in sh.values())
    assert "mul_mat_vec" in opstats.class_shares(df)["decode"]
    rows = opstats.op_rows(df)
    for phase in ("prefill", "decode"):
        assert abs(sum(r["share"] for r in rows if r["phase"] == phase) - 1.0) < 1e-9
        assert abs(sum(r["share_corrected"] for r in rows if r["phase"] == phase) - 1.0) < 1e-9
    nodes = df[df["metric"] == "node_ns"]
    assert "result_output" in set(nodes["label"])
    # the summary columns, computed on read (the overhead needs the plain reps: see the worker test)
    extra = opstats.ops_summary(df)
    assert {"mul_mat_vec_share_decode", "mul_mat_share_prefill", "ops_overhead_pct"} <= set(extra)
    assert 0.0 < extra["mul_mat_vec_share_decode"] <= 1.0 and 0.0 < extra["mul_mat_share_prefill"] <= 1.0


def test_untimed_work_outside_phases_is_not_traced(traced):
    _, _, _, events, _, _, _ = traced
    # Each rep's prefill window holds exactly one prompt's graph: one GET_ROWS for the embeddings
    # (plus one for the last-token rows), never the untimed filler's.
    per_rep = [sum(1 for e in events if e.phase == "prefill" and e.rep == r and e.name == "result_output")
               for r in range(REPS)]
    assert per_rep == [1] * REPS
    dec = [sum(1 for e in events if e.phase == "decode" and e.rep == r and e.name == "result_output")
           for r in range(REPS)]
    assert dec == [N_GEN] * REPS


def test_plain_context_after_ops_end_has_no_callback(traced):
    be, case, _, _, _, tracer, _ = traced
    assert be._tracer is None and be._probe is None
    # Were the old callback still installed, marking the detached tracer would record nodes now.
    n = len(tracer.raw)
    tracer.mark("decode", 99)
    be.reset()
    be.prefill(list(range(1, 9)))
    be.decode_step(5)
    assert be.n_cached() == 9
    assert len(tracer.raw) == n
    tracer.mark("", 99)


def test_opstats_exact_shares_on_hand_made_samples():
    S = Sample
    ss = [
        # two reps of decode, launch cost 10 ns per node
        S(0, "decode", "op_ns", 700, label="MUL_MAT|mul_mat_vec"), S(0, "decode", "op_count", 10, label="MUL_MAT|mul_mat_vec"),
        S(0, "decode", "op_ns", 200, label="FLASH_ATTN_EXT|attention"), S(0, "decode", "op_count", 5, label="FLASH_ATTN_EXT|attention"),
        S(0, "decode", "op_ns", 100, label="ADD|elementwise"), S(0, "decode", "op_count", 20, label="ADD|elementwise"),
        S(1, "decode", "op_ns", 700, label="MUL_MAT|mul_mat_vec"), S(1, "decode", "op_count", 10, label="MUL_MAT|mul_mat_vec"),
        S(1, "decode", "op_ns", 200, label="FLASH_ATTN_EXT|attention"), S(1, "decode", "op_count", 5, label="FLASH_ATTN_EXT|attention"),
        S(1, "decode", "op_ns", 100, label="ADD|elementwise"), S(1, "decode", "op_count", 20, label="ADD|elementwise"),
        S(0, "decode", "op_launch_ns", 10.0), S(1, "decode", "op_launch_ns", 10.0),
        # one rep of prefill with a typical time below the raw one (a stall removed); no probe of
        # its own, so the decode probes' launch cost applies
        S(0, "prefill", "op_ns", 900, label="MUL_MAT|mul_mat"), S(0, "prefill", "op_count", 3, label="MUL_MAT|mul_mat"),
        S(0, "prefill", "op_typical_ns", 600, label="MUL_MAT|mul_mat"),
        S(0, "prefill", "op_ns", 100, label="RMS_NORM|norm"), S(0, "prefill", "op_count", 2, label="RMS_NORM|norm"),
        S(0, "prefill", "op_typical_ns", 100, label="RMS_NORM|norm"),
        # plain reps and profiled wall times
        S(0, "prefill", "prefill_ns", 800), S(1, "prefill", "prefill_ns", 800),
        S(0, "decode", "decode_step_ns", 400, idx=0), S(0, "decode", "decode_step_ns", 400, idx=1),
        S(1, "decode", "decode_step_ns", 400, idx=0), S(1, "decode", "decode_step_ns", 400, idx=1),
        S(0, "prefill", "profiled_ns", 1200, label="ops"), S(0, "decode", "profiled_ns", 1600, label="ops"),
        S(1, "decode", "profiled_ns", 1600, label="ops"),
        S(0, "decode", "node_ns", 300, label="result_output"), S(1, "decode", "node_ns", 500, label="result_output"),
        S(0, "decode", "node_ns", 100, idx=1, label="ffn_down-0"),
    ]
    df = _df(ss)
    raw = opstats.class_shares(df, corrected=False)
    assert raw == {"decode": {"mul_mat_vec": 0.7, "attention": 0.2, "elementwise": 0.1},
                   "prefill": {"mul_mat": 0.9, "norm": 0.1}}
    # decode corrected: 700-100=600, 200-50=150, max(0, 100-200)=0 -> 0.8 / 0.2 / 0
    cor = opstats.class_shares(df)
    assert cor["decode"] == pytest.approx({"mul_mat_vec": 0.8, "attention": 0.2, "elementwise": 0.0}, abs=1e-12)
    # prefill corrected from op_typical_ns: 600-30=570, 100-20=80
    assert cor["prefill"] == pytest.approx({"mul_mat": 570 / 650, "norm": 80 / 650}, abs=1e-12)
    rows = {(r["phase"], r["op"]): r for r in opstats.op_rows(df)}
    mm = rows[("decode", "MUL_MAT")]
    assert mm["count"] == 10 and mm["time_ms"] == pytest.approx(700e-6) and mm["time_ms_corrected"] == pytest.approx(600e-6)
    assert mm["share"] == pytest.approx(0.7) and mm["share_corrected"] == pytest.approx(0.8)
    assert [r["op"] for r in opstats.op_rows(df) if r["phase"] == "decode"] == ["MUL_MAT", "FLASH_ATTN_EXT", "ADD"]
    summ = opstats.ops_summary(df)
    assert summ["mul_mat_vec_share_decode"] == pytest.approx(0.8)
    assert summ["mul_mat_share_prefill"] == pytest.approx(570 / 650)
    assert summ["mul_mat_vec_share_decode_raw"] == pytest.approx(0.7)
    # profiled 1200 + 1600 vs plain 800 + 800 -> +75%; per phase +50% and +100%
    assert summ["ops_overhead_pct"] == pytest.approx(75.0)
    assert summ["ops_overhead_pct_prefill"] == pytest.approx(50.0)
    assert summ["ops_overhead_pct_decode"] == pytest.approx(100.0)
    assert summ["op_launch_ns_decode"] == 10.0 and summ["op_launch_ns_prefill"] == 10.0  # falls back on all probes
    assert summ["ops_coverage_pct_decode"] == pytest.approx(750 / 800 * 100)
    top = opstats.top_nodes(df, "decode")
    assert [n["name"] for n in top] == ["result_output", "ffn_down-0"]
    assert top[0]["time_ms"] == pytest.approx(400e-6) and top[0]["share"] == pytest.approx(0.4)
    row = {"run_id": "r1", "case_id": 3, "device": "dev", "backend": "llama-cpp", "model": "m", "quant": "Q4_K_M",
           "n_prompt": 32, "n_gen": 4, "status": "ok"}
    csv_rows = opstats.ops_csv_rows(row, df)
    assert len(csv_rows) == 5 and list(csv_rows[0]) == list(opstats.OPS_CSV_COLUMNS)
    assert csv_rows[0]["quant"] == "Q4_K_M" and csv_rows[0]["run_id"] == "r1" and "status" not in csv_rows[0]
    assert {"phase", "op_class", "op", "count", "time_ms", "share", "share_corrected"} <= set(opstats.OPS_CSV_COLUMNS)


def test_opstats_without_op_samples_is_empty():
    df = _df([Sample(0, "prefill", "prefill_ns", 800)])
    assert opstats.class_shares(df) == {} and opstats.op_rows(df) == [] and opstats.top_nodes(df, "decode") == []
    assert opstats.ops_summary(df)["mul_mat_vec_share_decode"] is None


def test_run_worker_with_ops_profile_end_to_end(tiny_gguf, tmp_path):
    case = Case(backend="llama-cpp", model=str(tiny_gguf["Q4_K_M"]), n_prompt=32, n_gen=4, reps=2, profile=("ops",))
    res = run_worker(case, tmp_path / "case.log")
    assert res.status == "ok", res.error
    df = _df(res.samples)
    ops = df[df["metric"] == "op_ns"]
    assert set(ops["phase"]) == {"prefill", "decode"}
    prof = df[df["metric"] == "profiled_ns"]
    assert set(prof["label"]) == {"ops"} and len(prof) == 2 * 2  # ops profiles min(reps, 3) = 2 reps
    plain = df[df["metric"] == "decode_step_ns"]
    assert set(plain["rep"]) == {0, 1} and len(plain) == 2 * 4  # the plain reps are all there
    summary = opstats.ops_summary(df)
    assert 0.0 < summary["mul_mat_vec_share_decode"] <= 1.0
    assert 0.0 < summary["mul_mat_share_prefill"] <= 1.0
    assert summary["ops_overhead_pct"] is not None
    for sh in opstats.class_shares(df).values():
        assert abs(sum(sh.values()) - 1.0) < 1e-9


def test_typical_time_is_the_median_of_a_nodes_repeats():
    from edgebench.profilers.ops import _op_samples
    from edgebench.records import OpEvent

    ev = []
    for rep, stall in ((0, 0), (1, 9000), (2, 0)):
        # prefill: two ubatches, the same node name at different costs; rep 1's second one stalls
        ev += [OpEvent("prefill", rep, "MUL_MAT", "mul_mat", "ffn_up-0", 100),
               OpEvent("prefill", rep, "MUL_MAT", "mul_mat", "ffn_up-0", 40 + stall)]
        # decode: three steps growing 10, 20, 30 (median 20), one stalled step in rep 2
        ev += [OpEvent("decode", rep, "FLASH_ATTN_EXT", "attention", "node_21", ns + (5000 if rep == 2 and ns == 30 else 0))
               for ns in (10, 20, 30)]
        ev += [OpEvent("launch/decode", rep, "ADD", "elementwise", "node_0", ns) for ns in [999] * 8 + [3, 4, 5] * 4]
    got = {(s.metric, s.phase, s.rep, s.label): s.value for s in _op_samples(ev)}
    assert got[("op_ns", "prefill", 1, "MUL_MAT|mul_mat")] == 100 + 9040
    assert all(got[("op_typical_ns", "prefill", r, "MUL_MAT|mul_mat")] == 140 for r in range(3))
    assert got[("op_ns", "decode", 2, "FLASH_ATTN_EXT|attention")] == 5060
    assert all(got[("op_typical_ns", "decode", r, "FLASH_ATTN_EXT|attention")] == 60 for r in range(3))
    assert all(got[("op_count", "decode", r, "FLASH_ATTN_EXT|attention")] == 3 for r in range(3))
    # the probe's first nodes (thread wake-up) are dropped before the median
    assert all(got[("op_launch_ns", "decode", r, "")] == 4 for r in range(3))
    assert got[("node_ns", "decode", 2, "node_21")] == 5060


def test_one_task_ops_are_corrected_at_the_one_thread_launch_cost_and_clipping_is_reported():
    S = Sample
    ss = [  # one decode rep: a launch costs 10 ns on all threads, 2 ns on one (GET_ROWS: one task in ggml)
        S(0, "decode", "op_ns", 700, label="MUL_MAT|mul_mat_vec"), S(0, "decode", "op_count", 10, label="MUL_MAT|mul_mat_vec"),
        S(0, "decode", "op_ns", 50, label="GET_ROWS|copy"), S(0, "decode", "op_count", 5, label="GET_ROWS|copy"),
        S(0, "decode", "op_ns", 100, label="ADD|elementwise"), S(0, "decode", "op_count", 20, label="ADD|elementwise"),
        S(0, "decode", "op_launch_ns", 10.0), S(0, "decode", "op_launch1_ns", 2.0),
    ]
    df = _df(ss)
    rows = {r["op"]: r for r in opstats.op_rows(df)}
    # GET_ROWS: 50 - 5 x 2 = 40 (the all-threads cost would have clipped it to 0); MUL_MAT 700 - 100
    assert rows["GET_ROWS"]["time_ms_corrected"] == pytest.approx(40e-6) and rows["GET_ROWS"]["time_ms_clipped"] == 0
    assert rows["MUL_MAT"]["time_ms_corrected"] == pytest.approx(600e-6)
    # ADD: 100 - 20 x 10 < 0: clipped to 0, and the 100 ns it took off are reported
    assert rows["ADD"]["time_ms_corrected"] == 0 and rows["ADD"]["time_ms_clipped"] == pytest.approx(100e-6)
    assert opstats.class_shares(df)["decode"]["copy"] == pytest.approx(40 / 640)
    summ = opstats.ops_summary(df)
    assert summ["ops_clipped_pct_decode"] == pytest.approx(100 / 850 * 100)
    assert summ["op_launch1_ns_decode"] == 2.0
    # a run stored before the one-thread probe: every node at the all-threads cost, as it was then
    old = _df([x for x in ss if x.metric != "op_launch1_ns"])
    assert {r["op"]: r for r in opstats.op_rows(old)}["GET_ROWS"]["time_ms_corrected"] == 0
    # no probe at all (ONNX Runtime): nothing corrected, nothing clipped, and the report says so
    raw = _df([x for x in ss if not x.metric.startswith("op_launch")])
    assert opstats.ops_summary(raw)["ops_clipped_pct_decode"] is None
    assert {r["op"]: r for r in opstats.op_rows(raw)}["ADD"]["time_ms_corrected"] == pytest.approx(100e-6)
    import pandas as pd

    from edgebench.present.report import _correction_note

    assert "no launch probe" in _correction_note(pd.DataFrame([opstats.ops_summary(raw)]))
    assert "launch-corrected" not in _correction_note(pd.DataFrame([opstats.ops_summary(raw)]))
    note = _correction_note(pd.DataFrame([summ]))
    assert "per thread count" in note and f"{100 / 850 * 100:.1f}%" in note


def test_phase_text_ranks_classes_and_sums_the_rest():
    from edgebench.present.ops_brief import phase_text

    shares = {"copy": 0.05, "mul_mat": 0.6, "norm": 0.1, "rope": 0.1, "attention": 0.12, "other": 0.03}
    assert phase_text(shares) == "mul_mat 60%, attention 12%, norm 10%, rope 10%, other 8%"
    assert phase_text({"mul_mat_vec": 1.0}) == "mul_mat_vec 100%"


def test_run_with_ops_profile_prints_the_breakdown(tiny_gguf, tmp_path, capsys):
    """`edgebench run --profile ops` ends with one line per case: the largest classes per phase,
    labelled launch-corrected (llama.cpp has a launch probe)."""
    from edgebench.cli import main

    code = main(["run", "-m", str(tiny_gguf["Q4_K_M"]), "-p", "16", "-n", "4", "-r", "1", "--profile", "ops",
                 "-o", str(tmp_path / "out"), "--no-report"])
    err = capsys.readouterr().err
    (line,) = [l for l in err.splitlines() if l.startswith("ops, case 0")]
    assert code == 0 and "launch-corrected" in line and "decode: mul_mat_vec" in line and "prefill: " in line, err
