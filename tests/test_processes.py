"""--processes N (issue 17 part 2, pyperf's answer to between-process variance): N worker processes
per case, the reps split among them, cases interleaved, one stored case with distinct rep numbers,
and the within- and between-process spread in the summary, the interval taking the wider."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from edgebench.analysis.per_rep import ci_halfwidth_rel
from edgebench.analysis.summary import process_spread, summarize_run
from edgebench.cli import main
from edgebench.run.processes import process_reps
from edgebench.store.database import Store


@pytest.mark.parametrize("reps, n, each", [(5, 2, 3), (6, 3, 2), (2, 5, 1), (1, 1, 1)])
def test_reps_are_split_rounding_up(reps, n, each):
    assert process_reps(reps, n) == each


def test_processes_interleave_cases_and_store_one_case_each(tmp_path, capsys):
    model = tmp_path / "m.fake"
    model.write_text(json.dumps({"prefill_us_per_token": 20, "decode_us": 300}))
    out = tmp_path / "out"
    code = main(["run", "-m", str(model), "--backend", "fake", "-p", "32", "-n", "4", "-d", "0,128", "-r", "5",
                 "--processes", "2", "-o", str(out), "--no-report"])
    assert code == 0, capsys.readouterr().err
    store = Store(out, create=False)
    run_id = store.list_runs()[0].run_id
    run_dir = out / run_id
    o = json.loads((run_dir / "run.json").read_text())["overhead"]
    assert [(c["case_id"], c["process"]) for c in o["cases"]] == [(0, 0), (1, 0), (0, 1), (1, 1)]  # interleaved
    assert sorted(p.name for p in (run_dir / "logs").iterdir()) == [f"case-00{i}-p{k}.log" for i in (0, 1) for k in (0, 1)]
    cases = store.get_cases(run_id)
    assert len(cases) == 2 and all(c["status"] == "ok" for c in cases)
    samples = store.get_samples(run_id)
    for c in cases:
        assert c["info"]["processes"] == [[0, 1, 2], [3, 4, 5]]  # ceil(5 / 2) = 3 reps each, numbered apart
        s = samples[samples["case_id"] == c["case_id"]]
        assert sorted(s[s["metric"] == "prefill_ns"]["rep"]) == [0, 1, 2, 3, 4, 5]
        assert (s["metric"] == "load_ns").sum() == 2  # each process loaded the model
        assert c["info"]["reps"]["used"] == 6
    for row in summarize_run(store, run_id):
        assert row["processes"] == 2 and row["reps_used"] == 6
        for k in ("prefill_within_cv", "prefill_between_cv", "decode_within_cv", "decode_between_cv"):
            assert row[k] is not None and row[k] >= 0


def _samples(per_process: list[list[float]]) -> tuple[pd.DataFrame, list[list[int]]]:
    """Prefill samples of a 100-token prompt, one per rep, the reps of each process given in ms."""
    rows, groups, rep = [], [], 0
    for ms in per_process:
        groups.append(list(range(rep, rep + len(ms))))
        for v in ms:
            rows.append({"rep": rep, "phase": "prefill", "metric": "prefill_ns", "value": v * 1e6, "idx": 0, "label": ""})
            rep += 1
    return pd.DataFrame(rows), groups


def test_between_process_spread_widens_the_interval_where_it_is_larger():
    # each process steady (within 0.1%), the processes 10% apart: pooled over all reps the interval
    # looks narrow, the processes say otherwise
    s, groups = _samples([[10.0, 10.01, 9.99, 10.0], [11.0, 11.01, 10.99, 11.0], [10.5, 10.51, 10.49, 10.5]])
    spread = process_spread(s, groups, 100, 0)
    rates = 100 / (s["value"].to_numpy() / 1e9)
    means = np.array([rates[g].mean() for g in groups])
    assert spread["prefill_between_cv"] == pytest.approx(means.std(ddof=1) / means.mean())
    assert spread["prefill_within_cv"] < 0.002 < 0.04 < spread["prefill_between_cv"]
    assert spread["prefill_between_ci"] == pytest.approx(ci_halfwidth_rel(means))
    assert spread["prefill_between_ci"] > ci_halfwidth_rel(rates)
    assert spread["decode_between_cv"] is None  # no decode measured

    from edgebench.analysis.summary import summarize_case

    case = {"case_id": 0, "backend": "fake", "model": "m", "n_prompt": 100, "n_gen": 0, "test": "split",
            "info": {"processes": groups}}
    row = summarize_case("r", "d", case, s)
    assert row["ci_pct"] == pytest.approx(spread["prefill_between_ci"] * 100)


def test_processes_must_be_a_positive_count(tmp_path, capsys):
    assert main(["run", "-m", "x.fake", "--backend", "fake", "--processes", "0", "-o", str(tmp_path)]) == 2
    assert "edgebench: error: --processes must be >= 1" in capsys.readouterr().err
