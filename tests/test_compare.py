"""`edgebench compare` on committed golden run folders (tests/data/golden, made by make_golden.py):
base and rerun differ by noise only, slow10 is 10% slower, other_device ran elsewhere, new_model is
another model 10% faster. Nothing here is timed."""

import importlib.util
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from edgebench.analysis import compare as cmp
from edgebench.analysis import significance
from edgebench.cli import main
from edgebench.errors import InputError

GOLDEN = Path(__file__).parent / "data" / "golden"


def g(name: str) -> str:
    return str(GOLDEN / name)


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def verdicts(res, metric=None):
    return {r.verdict for r in res.rows if metric is None or r.metric == metric}


def test_identical_samples_are_no_regression(capsys):
    code, out, err = run_cli(capsys, "compare", g("base"), g("base"))
    assert code == 0, err
    assert "0 regression(s)" in out
    res = cmp.compare(g("base"), g("base"))
    assert verdicts(res) == {"ok"}
    assert all(r.ratio == 1.0 for r in res.rows)


def test_ten_percent_slowdown_is_a_regression(capsys):
    code, out, err = run_cli(capsys, "compare", g("base"), g("slow10"))
    assert code == 3, err
    res = cmp.compare(g("base"), g("slow10"))
    for metric in ("prefill_tok_s", "decode_tok_s", "tpot_ms_p50"):
        assert verdicts(res, metric) == {"regression"}, metric
    dec = [r for r in res.rows if r.metric == "decode_tok_s"]
    for r in dec:
        assert r.ratio == pytest.approx(0.9, abs=0.02)
        assert r.ci_high < 1.0 and r.p_value < 0.05 and r.test == "mannwhitney"
    # memory did not change: buffer sizes are exact and equal
    assert verdicts(res, "weights_bytes") == {"ok"}


def test_noise_within_the_threshold_is_no_regression(capsys):
    code, _, err = run_cli(capsys, "compare", g("base"), g("rerun"))
    assert code == 0, err
    res = cmp.compare(g("base"), g("rerun"))
    assert verdicts(res) == {"ok"}
    assert all(abs(r.change) < 0.05 for r in res.rows)
    slow = cmp.compare(g("base"), g("slow10"))
    tpot = [r for r in slow.rows if r.metric == "tpot_ms_p50"]
    assert all(r.change > 0.05 and r.verdict == "regression" for r in tpot)  # latency up = worse


def test_thresholds_global_and_per_metric(capsys):
    # a 10% slowdown passes a 15% threshold ...
    assert run_cli(capsys, "compare", g("base"), g("slow10"), "--threshold", "15%")[0] == 0
    # ... and a per-metric threshold overrides the global one for that metric only
    code, out, _ = run_cli(capsys, "compare", g("base"), g("slow10"), "--threshold", "15%",
                           "--fail-on", "decode_tok_s:3%", "--format", "json")
    doc = json.loads(out)
    assert code == 3
    bad = {r["metric"] for r in doc["rows"] if r["verdict"] == "regression"}
    assert bad == {"decode_tok_s"}


def test_different_devices_are_refused_without_force(capsys):
    code, _, err = run_cli(capsys, "compare", g("base"), g("other_device"))
    assert code == 2
    assert err.startswith("edgebench: error:") and "--force" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "compare", g("base"), g("other_device"), "--force")
    assert code == 0, err


def test_match_model_compares_two_models(capsys):
    code, _, err = run_cli(capsys, "compare", g("base"), g("new_model"))
    assert code == 2 and "--match model" in err and "smollm2-135m" in err
    code, out, err = run_cli(capsys, "compare", g("base"), g("new_model"), "--match", "model", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    dec = [r for r in doc["rows"] if r["metric"] == "decode_tok_s"]
    assert len(dec) == 2 and {r["verdict"] for r in dec} == {"improved"}
    assert "smollm-135m -> smollm2-135m" in dec[0]["case"]
    assert "key_model" not in dec[0]  # model left the join key


def test_output_formats(capsys):
    code, out, _ = run_cli(capsys, "compare", g("base"), g("slow10"), "--format", "md")
    assert code == 3 and "| case | metric | baseline | candidate | ratio |" in out and "**regression**" in out
    code, out, _ = run_cli(capsys, "compare", g("base"), g("slow10"), "--format", "csv")
    head = out.splitlines()[0].split(",")
    assert {"key_quant", "metric", "baseline", "candidate", "ratio", "ci_low", "ci_high", "p_value", "verdict"} <= set(head)
    code, out, _ = run_cli(capsys, "compare", g("base"), g("slow10"))
    assert code == 3 and "regression" in out and "decode_tok_s" in out
    assert run_cli(capsys, "compare", g("base"), g("slow10"), "--format", "xml")[0] == 2


def _subset(src: Path, dst: Path, reps: int) -> str:
    """A copy of a run folder keeping only the first ``reps`` reps."""
    dst.mkdir(parents=True)
    shutil.copy(src / "run.json", dst / "run.json")
    s = pd.read_csv(src / "samples.csv")
    s[s["rep"] < reps].to_csv(dst / "samples.csv", index=False)
    return str(dst)


def test_too_few_reps_cannot_show_significance(tmp_path, capsys):
    base, slow = _subset(GOLDEN / "base", tmp_path / "b", 3), _subset(GOLDEN / "slow10", tmp_path / "s", 3)
    code, _, err = run_cli(capsys, "compare", base, slow)
    assert code == 4  # issue 17: a change past the threshold that cannot be shown is inconclusive, never 0
    assert "smallest p" in err and "0.10" in err
    assert verdicts(cmp.compare(base, slow), "decode_tok_s") == {"inconclusive"}
    # noise within the threshold stays ok (exit 0) even with 3 reps
    assert run_cli(capsys, "compare", base, _subset(GOLDEN / "rerun", tmp_path / "r", 3))[0] == 0
    # one rep per side: no test at all; before issue 17 a single value counted as "exact"
    b1, s1 = _subset(GOLDEN / "base", tmp_path / "b1", 1), _subset(GOLDEN / "slow10", tmp_path / "s1", 1)
    res = cmp.compare(b1, s1)
    dec = [r for r in res.rows if r.metric == "decode_tok_s"]
    assert {r.test for r in dec} == {"none"} and {r.verdict for r in dec} == {"inconclusive"}
    assert res.exit_code == 4 and run_cli(capsys, "compare", b1, s1)[0] == 4


def test_csv_files_as_sides(tmp_path, capsys):
    # a samples.csv inside its run folder, and a summary.csv on its own (Welch test on mean/std/reps)
    assert run_cli(capsys, "compare", g("base/samples.csv"), g("slow10/samples.csv"))[0] == 3
    for name in ("base", "slow10"):
        (tmp_path / name).mkdir()
        shutil.copy(GOLDEN / name / "summary.csv", tmp_path / name / "summary.csv")
    res = cmp.compare(str(tmp_path / "base" / "summary.csv"), str(tmp_path / "slow10" / "summary.csv"))
    dec = [r for r in res.rows if r.metric == "decode_tok_s"]
    assert {r.test for r in dec} == {"welch"} and {r.verdict for r in dec} == {"regression"}
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(GOLDEN / "base" / "samples.csv", lone / "samples.csv")
    code, _, err = run_cli(capsys, "compare", lone / "samples.csv", g("base"))
    assert code == 2 and "no case keys" in err


def test_run_ids_in_a_store(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    mg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mg)
    from edgebench.store.database import Store

    store = Store(tmp_path / "store")
    mg.make(store, "base", 1, out_root=tmp_path)
    mg.make(store, "slow10", 3, speed=0.9, out_root=tmp_path)
    code, out, err = run_cli(capsys, "compare", "golden-base", "golden-slow", "--store", tmp_path / "store")
    assert code == 3, err
    assert "run golden-base" in out
    assert run_cli(capsys, "compare", "golden-base", "golden-base", "--store", tmp_path / "store")[0] == 0


def test_unknown_inputs_are_one_line_errors(tmp_path, capsys):
    for args in (("nosuchrun", g("base"), "--store", tmp_path),
                 (g("base"), str(tmp_path / "missing" / "summary.csv")),
                 (g("base"), str(tmp_path))):
        code, _, err = run_cli(capsys, "compare", *args)
        assert code == 2 and err.startswith("edgebench: error:") and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(capsys, "compare", g("base"), g("slow10"), "--fail-on", "bogus:3%")
    assert code == 2 and "unknown metric" in err


def test_parsing_and_statistics_helpers():
    assert cmp.parse_fraction("5%") == pytest.approx(0.05)
    assert cmp.parse_fraction("0.05") == pytest.approx(0.05)
    assert cmp.parse_fraction("10") == pytest.approx(0.10)
    assert cmp.parse_fail_on("decode_tok_s:3%,rss_peak_bytes:10%") == {"decode_tok_s": pytest.approx(0.03),
                                                                        "rss_peak_bytes": pytest.approx(0.10)}
    with pytest.raises(InputError):
        cmp.parse_fraction("fast")
    with pytest.raises(InputError):
        cmp.parse_fail_on("decode_tok_s")
    with pytest.raises(InputError):
        cmp.check_match("device")
    assert significance.min_mannwhitney_p(3, 3) == pytest.approx(0.1)
    assert significance.min_mannwhitney_p(5, 5) == pytest.approx(2 / 252)


# -- quality gates ------------------------------------------------------------------------------
def _quality_samples(kld_scale: float, seed: int) -> list:
    """Per-token quality samples (phase "quality") from random logits scored with the real math;
    ``kld_scale`` widens the candidate's noise (more damage: higher KLD, lower same-top p)."""
    import numpy as np

    from edgebench.analysis import quality as q
    from edgebench.records import Sample

    rng = np.random.default_rng(seed)
    ref = rng.normal(0, 3, (300, 64))
    targets = rng.integers(0, 64, 300)
    cand = ref + np.random.default_rng(99).normal(0, 0.4 * kld_scale, ref.shape)
    s = q.score(q.compress(ref, targets, 64), cand, targets)
    return [Sample(0, "quality", m, float(v), idx=i) for m in q.TOKEN_METRICS for i, v in enumerate(getattr(s, m))]


def _quality_run(store, tmp_path: Path, name: str, damage: float) -> Path:
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_golden.py")
    mg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mg)
    import numpy as np

    from edgebench.analysis.summary import export_run
    from edgebench.records import Case

    rng = np.random.default_rng(1)
    run_id = f"q-{name}"
    store.create_run(run_id, "ci-box", {}, {})
    for cid, (quant, (bpw, dec, pre)) in enumerate(mg.QUANTS.items()):
        weights = int(mg.N_PARAMS * bpw / 8)
        case = Case(backend="llama-cpp", model=f"/models/m-{quant}.gguf", n_prompt=mg.N_PROMPT, n_gen=mg.N_GEN,
                    reps=mg.REPS, n_threads=2)
        ss = mg.case_samples(rng, dec, pre, weights, 1.0) + _quality_samples(damage if quant == "Q4_K_M" else 1.0, cid)
        info = {"model": {"model_name": "m", "quant": quant, "bpw": bpw, "n_params": mg.N_PARAMS}}
        store.save_case(run_id, cid, case, "ok", "", info, ss, 0.0, 1.0)
    store.finish_run(run_id, "complete")
    export_run(store, run_id, tmp_path / run_id)
    return tmp_path / run_id


def test_a_candidate_whose_kld_regressed_fails_the_gate(tmp_path, capsys):
    from edgebench.store.database import Store

    store = Store(tmp_path / "store")
    base = _quality_run(store, tmp_path, "base", 1.0)
    same = _quality_run(store, tmp_path, "same", 1.0)
    worse = _quality_run(store, tmp_path, "worse", 1.3)
    header = (base / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"kld_mean", "kld_p99", "kld_max", "same_top_p", "delta_p_rms", "ppl", "ppl_ref", "ppl_ratio"} <= set(header)
    assert header.index("ppl_ratio") < header.index("status")
    code, _, err = run_cli(capsys, "compare", base, same, "--fail-on", "kld_mean:20%")
    assert code == 0, err
    res = cmp.compare(str(base), str(worse), opts=cmp.Options(fail_on={"kld_mean": 0.20}))
    kld = {r.label: r for r in res.rows if r.metric == "kld_mean"}
    assert {r.test for r in kld.values()} == {"exact"}
    bad = [r for r in kld.values() if "Q4_K_M" in r.label][0]
    assert bad.verdict == "regression" and bad.ratio > 1.2
    assert [r.verdict for r in kld.values() if "Q8_0" in r.label] == ["ok"]
    assert {r.metric for r in res.rows} >= {"kld_mean", "same_top_p", "ppl_ratio"}  # in the defaults
    code, out, err = run_cli(capsys, "compare", base, worse, "--fail-on", "kld_mean:20%")
    assert code == 3, err
    assert "kld_mean" in out
    # the store's run ids work the same way (samples, not the CSV)
    code, _, err = run_cli(capsys, "compare", "q-base", "q-worse", "--store", tmp_path / "store", "--fail-on",
                           "kld_mean:20%")
    assert code == 3, err


# -- issue 17 part 3: a gate that cannot pass by accident --------------------------------------
def _drop_case(src: Path, dst: Path, case_id: int, status: str | None) -> str:
    """A copy of a run folder where case ``case_id`` did not succeed (``status``, e.g. failed or
    skipped, with an error) or is gone altogether (None)."""
    dst.mkdir(parents=True)
    doc = json.loads((src / "run.json").read_text())
    if status is None:
        doc["cases"] = [c for c in doc["cases"] if c["case_id"] != case_id]
    else:
        for c in doc["cases"]:
            if c["case_id"] == case_id:
                c["status"], c["error"] = status, "oom: killed by SIGKILL (out of memory)"
    (dst / "run.json").write_text(json.dumps(doc))
    s = pd.read_csv(src / "samples.csv")
    s[s["case_id"] != case_id].to_csv(dst / "samples.csv", index=False)
    return str(dst)


@pytest.mark.parametrize("status", ["failed", "skipped", None])
def test_a_case_lost_in_the_candidate_is_a_regression(tmp_path, capsys, status):
    cand = _drop_case(GOLDEN / "rerun", tmp_path / "c", 0, status)
    code, out, err = run_cli(capsys, "compare", g("base"), cand, "--format", "json")
    assert code == 3, err
    doc = json.loads(out)
    lost = [r for r in doc["rows"] if r["status"] != "ok"]
    assert len(lost) == 1 and lost[0]["verdict"] == "regression" and lost[0]["metric"] == "case"
    assert lost[0]["status"] == (status or "missing")
    assert ("SIGKILL" in lost[0]["reason"]) if status else ("no such case" in lost[0]["reason"])
    assert {r["verdict"] for r in doc["rows"] if r["status"] == "ok"} == {"ok"}  # the rest is the rerun
    for fmt in ("table", "md", "csv"):
        code, out, _ = run_cli(capsys, "compare", g("base"), cand, "--format", fmt)
        assert code == 3 and (status or "missing") in out, fmt
    assert "missing, failed or skipped" in run_cli(capsys, "compare", g("base"), cand)[1]
    code, out, _ = run_cli(capsys, "compare", g("base"), cand, "--allow-missing", "--format", "json")
    assert code == 0
    assert [r["verdict"] for r in json.loads(out)["rows"] if r["status"] != "ok"] == ["missing"]


def test_a_candidate_with_only_failed_cases_fails_the_gate(tmp_path, capsys):
    doc = json.loads((GOLDEN / "base" / "run.json").read_text())
    cand = tmp_path / "c"
    cand.mkdir()
    for c in doc["cases"]:
        c["status"], c["error"] = "failed", "crash: SIGSEGV"
    (cand / "run.json").write_text(json.dumps(doc))
    s = pd.read_csv(GOLDEN / "base" / "samples.csv")
    s[s["metric"] == "nothing"].to_csv(cand / "samples.csv", index=False)
    code, out, err = run_cli(capsys, "compare", g("base"), cand, "--format", "json")
    assert code == 3, err
    rows = json.loads(out)["rows"]
    assert rows and {r["status"] for r in rows} == {"failed"} and {r["verdict"] for r in rows} == {"regression"}


def _tpot_side(tmp_path: Path, name: str, hits: list[float]) -> str:
    """A run folder of one case, 5 reps x 64 decode steps of ~10 ms; rep i's steps are slowed to
    ~618 ms for the fraction hits[i] of its steps (a CPU hog hitting some reps)."""
    import numpy as np

    rng = np.random.default_rng(len(name) + int(10 * sum(hits)))
    src = json.loads((GOLDEN / "base" / "run.json").read_text())
    case = dict(src["cases"][0], case_id=0, status="ok", error="")
    run_id = f"tpot-{name}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "run.json").write_text(json.dumps({**src, "run_id": run_id, "cases": [case]}))
    n_gen = 64
    rows = []
    for rep, hit in enumerate(hits):
        rows.append((run_id, 0, rep, "prefill", "prefill_ns", 50e6 * rng.normal(1, 0.005), "", 0, ""))
        slow = rng.random(n_gen) < hit
        for i in range(n_gen):
            ms = (618 if slow[i] else 10) * rng.normal(1, 0.01)
            rows.append((run_id, 0, rep, "decode", "decode_step_ns", ms * 1e6, "", i, ""))
    cols = ["run_id", "case_id", "rep", "phase", "metric", "value", "label", "idx", "t_ns"]
    pd.DataFrame(rows, columns=cols).to_csv(tmp_path / name / "samples.csv", index=False)
    return str(tmp_path / name)


@pytest.mark.parametrize("hits", [[0, 0, 1, 1, 1], [1, 0, 0.6, 1, 0], [0, 1, 0, 0.7, 1]])
def test_a_cpu_hog_hitting_some_reps_is_not_passed(tmp_path, capsys, hits):
    """Issue 17: TPOT p50 10 ms -> 618 ms at -r 5, the hog hitting only some reps: Mann-Whitney p 0.15
    called it "insignificant" and compare exited 0."""
    base = _tpot_side(tmp_path, "base", [0, 0, 0, 0, 0])
    cand = _tpot_side(tmp_path, "cand", hits)
    res = cmp.compare(base, cand, opts=cmp.Options(metrics=("tpot_ms_p50",)))
    (row,) = res.rows
    assert row.candidate / row.baseline > 50 and row.test == "permutation"
    # whole reps are the unit, so 3 hit reps of 5 can rarely be proven (p >= 0.05 unless the two
    # unhit reps also happen to be the slowest normal ones) ... but the gate never passes them
    assert row.verdict == ("regression" if row.p_value < 0.05 else "inconclusive")
    assert res.exit_code == (3 if row.p_value < 0.05 else 4)
    code, out, err = run_cli(capsys, "compare", base, cand, "--metrics", "tpot_ms_p50")
    assert code == res.exit_code and row.verdict in out, err
    assert run_cli(capsys, "compare", base, cand)[0] in (3, 4)  # decode tok/s too: never 0
    # every rep hit: proven (exact permutation p 2/252)
    full = _tpot_side(tmp_path, "full", [1, 1, 1, 1, 1])
    res = cmp.compare(base, full, opts=cmp.Options(metrics=("tpot_ms_p50",)))
    assert res.rows[0].verdict == "regression" and res.rows[0].p_value == pytest.approx(2 / 252)
    assert run_cli(capsys, "compare", base, full)[0] == 3
    # the same side against itself is ok
    assert run_cli(capsys, "compare", base, base)[0] == 0


def test_permutation_and_fdr_helpers():
    import numpy as np

    b, c = np.array([10.0, 10.1, 9.9, 10.2, 9.8]), np.array([11.0, 11.1, 10.9, 11.2, 10.8])
    assert significance.permutation_p(b, c) == pytest.approx(2 / 252)
    assert significance.permutation_p(b, b.copy()) == 1.0
    q = significance.benjamini_hochberg([0.01, 0.04, 0.03, 0.5])
    assert q == pytest.approx([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])
    assert significance.benjamini_hochberg([]) == []


def test_the_false_discovery_rate_is_controlled_and_said(capsys):
    code, out, _ = run_cli(capsys, "compare", g("base"), g("slow10"), "--format", "json")
    doc = json.loads(out)
    assert code == 3 and doc["fdr"] == "benjamini-hochberg" and "Benjamini-Hochberg" in doc["summary"]
    tested = [r for r in doc["rows"] if r["p_value"] is not None]
    assert tested and all(r["p_adjusted"] >= r["p_value"] for r in tested)
    assert "false discovery rate" in run_cli(capsys, "compare", g("base"), g("slow10"))[1]


def test_one_rep_has_unknown_spread():
    import numpy as np

    from edgebench.analysis import per_rep
    from edgebench.analysis.summary import _summary_values

    assert per_rep.spread("decode_tok_s", {"decode_tok_s": np.array([5.0])}) is None
    v = _summary_values({"decode_tok_s": np.array([5.0]), "prefill_tok_s": np.array([50.0])})
    assert v["decode_tok_s_std"] is None and v["decode_cv"] is None and v["prefill_cv"] is None


# -- issue 17 part 2: the process, not the rep, is the unit of a case run with --processes ------
def _process_run(tmp_path: Path, name: str, means: list[float], reps: int = 5, info: bool = True) -> str:
    """A stored run (store at tmp_path/store) and its run folder: one case, each worker process's
    reps steady (0.1% noise) around its own level (``means``, one a process: prefill tok/s; decode
    tok/s a tenth of it), as `run --processes len(means)` stores it; ``info`` False: the same
    samples without the processes info (a bundle of an older edgebench)."""
    import numpy as np

    from edgebench.analysis.summary import export_run
    from edgebench.records import Case, Sample
    from edgebench.store.database import Store

    rng = np.random.default_rng(0)
    store = Store(tmp_path / "store")
    run_id = f"proc-{name}"
    store.create_run(run_id, "ci-box", {}, {})
    samples, groups = [Sample(-1, "load", "load_ns", 2.5e8)], []
    for k, level in enumerate(means):
        groups.append(list(range(k * reps, (k + 1) * reps)))
        for rep in groups[-1]:
            f = rng.normal(1, 0.001)
            samples.append(Sample(rep, "prefill", "prefill_ns", 100 / (level * f) * 1e9))
            samples += [Sample(rep, "decode", "decode_step_ns", 1e9 / (level / 10 * f), idx=i) for i in range(8)]
    case = Case(backend="llama-cpp", model="/models/m.gguf", n_prompt=100, n_gen=8, reps=reps * len(means), n_threads=2)
    case_info = {"model": {"model_name": "m", "quant": "Q4_K_M"}} | ({"processes": groups} if info else {})
    store.save_case(run_id, 0, case, "ok", "", case_info, samples, 0.0, 1.0)
    store.finish_run(run_id, "complete")
    export_run(store, run_id, tmp_path / run_id)
    return str(tmp_path / run_id)


def _rows(res, metric="prefill_tok_s"):
    return [r for r in res.rows if r.metric == metric]


def test_processes_that_disagree_are_not_a_regression_though_their_reps_look_it(tmp_path, capsys):
    # each process steady within 0.1%, the processes 5-12% apart; the candidate's about 8% slower:
    # pooled, 20 vs 20 reps look significant; 4 vs 4 processes cannot tell it from the spread between them
    base = _process_run(tmp_path, "base", [100, 112, 95, 108], reps=5)
    cand = _process_run(tmp_path, "cand", [92, 104, 86, 99], reps=5)
    res = cmp.compare(base, cand)
    (row,) = _rows(res)
    assert row.test_unit == "process" and (row.n_baseline, row.n_candidate) == (4, 4)
    assert row.p_value > 0.05 and row.verdict in ("inconclusive", "insignificant")
    assert res.regressions == 0 and res.exit_code in (0, 4)
    assert any("process as the unit" in w for w in res.warnings)
    code, out, err = run_cli(capsys, "compare", base, cand, "--format", "json")
    assert code == res.exit_code and "process as the unit" in err
    assert {r["test_unit"] for r in json.loads(out)["rows"] if r["metric"] == "decode_tok_s"} == {"process"}
    # the same samples without the processes info: rep by rep, as before, and "significant"
    plain_b = _process_run(tmp_path, "plain-base", [100, 112, 95, 108], reps=5, info=False)
    plain_c = _process_run(tmp_path, "plain-cand", [92, 104, 86, 99], reps=5, info=False)
    plain = cmp.compare(plain_b, plain_c)
    (prow,) = _rows(plain)
    assert prow.test_unit == "rep" and prow.n_baseline == 20 and prow.verdict == "regression"
    assert (prow.baseline, prow.candidate) == pytest.approx((row.baseline, row.candidate))  # same columns
    assert plain.exit_code == 3


def test_clearly_separated_processes_are_a_regression_and_three_each_are_inconclusive(tmp_path, capsys):
    base = _process_run(tmp_path, "base", [100, 101, 99, 100.5, 99.5], reps=3)
    slow = _process_run(tmp_path, "slow", [90, 91, 89, 90.5, 89.5], reps=3)
    res = cmp.compare(base, slow)
    for metric in ("prefill_tok_s", "decode_tok_s"):
        (row,) = _rows(res, metric)
        assert row.test_unit == "process" and row.n_baseline == row.n_candidate == 5
        assert row.p_value == pytest.approx(2 / 252) and row.verdict == "regression"
    assert run_cli(capsys, "compare", base, slow)[0] == 3
    # the store's run ids carry the case info too
    assert run_cli(capsys, "compare", "proc-base", "proc-slow", "--store", tmp_path / "store")[0] == 3
    # 3 vs 3 processes (of 5 reps each: 15 vs 15 reps) cannot reach p < 0.05: past the threshold, inconclusive
    b3 = _process_run(tmp_path, "b3", [100, 101, 99], reps=5)
    s3 = _process_run(tmp_path, "s3", [90, 91, 89], reps=5)
    res = cmp.compare(b3, s3)
    (row,) = _rows(res)
    assert row.test_unit == "process" and row.verdict == "inconclusive" and res.exit_code == 4
    code, _, err = run_cli(capsys, "compare", b3, s3)
    assert code == 4 and "with 3 vs 3 processes the smallest p" in err and "--processes 5" in err


def test_processes_on_one_side_only_say_the_units_differ(tmp_path, capsys):
    base = _process_run(tmp_path, "base", [100, 101, 99, 100.5, 99.5], reps=3)
    cand = _process_run(tmp_path, "cand", [90] * 3, reps=5, info=False)  # one process of 15 reps
    res = cmp.compare(base, cand)
    (row,) = _rows(res)
    assert row.test_unit == "process/rep" and (row.n_baseline, row.n_candidate) == (5, 15)
    assert any("units differ" in w and "baseline only" in w for w in res.warnings)
    assert run_cli(capsys, "compare", cand, base)[2].count("candidate only") == 1
