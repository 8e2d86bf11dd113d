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
    assert code == 0
    assert "smallest p" in err and "0.10" in err
    assert "insignificant" in verdicts(cmp.compare(base, slow), "decode_tok_s")


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
    assert cmp.min_mannwhitney_p(3, 3) == pytest.approx(0.1)
    assert cmp.min_mannwhitney_p(5, 5) == pytest.approx(2 / 252)
