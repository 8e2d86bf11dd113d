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
        assert c["info"]["reps"]["stop"] == "fixed" and "process_loop" not in c["info"]  # fixed -r: as before
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


# -- -r auto with --processes N: N is the least number; more while the processes disagree --------
def _auto_run(tmp_path, capsys, cfg: dict, *flags: str) -> tuple[Store, str]:
    model = tmp_path / "m.fake"
    model.write_text(json.dumps({"prefill_us_per_token": 50, "decode_us": 1000} | cfg))
    out = tmp_path / "out"
    code = main(["run", "-m", str(model), "--backend", "fake", "-p", "32", "-n", "4", "-r", "auto",
                 "--target-ci", "50%", "--processes", "2", *flags, "-o", str(out), "--no-report"])
    assert code == 0, capsys.readouterr().err
    store = Store(out, create=False)
    return store, store.list_runs()[0].run_id


def test_auto_adds_processes_while_the_processes_disagree_up_to_the_cap(tmp_path, capsys):
    # the fake's process_levels: each load of the model runs at the next speed factor, so the two
    # cases' processes run at 1.0, 1.5, 2.0 / 2.0, 1.0, 1.5 x: their interval over processes stays > 50%
    store, run_id = _auto_run(tmp_path, capsys, {"process_levels": [1.0, 2.0, 1.5]}, "-d", "0,32", "--max-processes", "3")
    o = json.loads((tmp_path / "out" / run_id / "run.json").read_text())["overhead"]
    assert [(c["case_id"], c["process"]) for c in o["cases"]] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    loops = {c["case_id"]: c["info"]["process_loop"] for c in store.get_cases(run_id)}
    for cid, c in enumerate(store.get_cases(run_id)):
        loop = loops[cid]
        assert len(c["info"]["processes"]) == loop["used"] == 3 and loop["stop"] == "max_processes"
        assert loop["min_processes"] == 2 and loop["max_processes"] == 3
        assert all(ci > 0.5 for ci in loop["ci_reached"].values())
    for row in summarize_run(store, run_id):
        assert row["processes"] == 3 and row["reps_stop"].endswith("; processes max_processes")
        # the row's interval is the one the loop judged (the summary's between-process interval)
        assert row["ci_pct"] == pytest.approx(100 * max(loops[row["case_id"]]["ci_reached"].values()))


def test_auto_stops_at_the_minimum_when_the_processes_agree(tmp_path, capsys):
    store, run_id = _auto_run(tmp_path, capsys, {})
    (c,) = store.get_cases(run_id)
    loop = c["info"]["process_loop"]
    assert loop["used"] == 2 and loop["stop"] == "target" and loop["max_processes"] == 8  # default 4 x N
    assert set(loop["ci_reached"]) == {"prefill_tok_s", "decode_tok_s"}
    assert all(ci <= 0.5 for ci in loop["ci_reached"].values())
    (row,) = summarize_run(store, run_id)
    assert row["processes"] == 2 and row["reps_stop"].endswith("; processes target")


def test_auto_processes_honour_max_time_over_all_processes(tmp_path, capsys):
    store, run_id = _auto_run(tmp_path, capsys, {"process_levels": [1.0, 2.0]}, "--max-time", "0.001")
    (c,) = store.get_cases(run_id)
    loop = c["info"]["process_loop"]
    assert loop["used"] == 2 and loop["stop"] == "max_time" and loop["rep_s"] >= 0.001
    assert [r["stop"] for r in c["info"]["reps_by_process"]] == ["max_time", "max_time"]


def test_the_schedule_grows_when_a_case_asks_for_another_process():
    import io

    from rich.console import Console
    from rich.progress import Progress

    from edgebench.records import Case
    from edgebench.run.processes import ProcessLoop, upcoming
    from edgebench.run.session import ProgressEvents

    case = Case(backend="fake", model="x.fake", n_prompt=8, n_gen=2, reps=20, target_ci=0.02)
    loops = [ProcessLoop.of(case, 2, 3), ProcessLoop.of(case, 2, 3)]
    assert loops[0].part(case, 0).reps == 20  # under -r auto --max-reps is the cap of each process
    assert ProcessLoop.of(case, 1).part(case, 0) == case and not ProcessLoop.of(case, 1).split
    assert upcoming(loops, set(), 0) == [1, 2, 3]  # 2 cases x the minimum 2 processes
    loops[0].used = loops[1].used = 2
    loops[0].wants_more = True  # case 0's processes disagree: a third round for it alone
    assert upcoming(loops, set(), 3) == [4]
    with Progress(console=Console(file=io.StringIO())) as p:
        ev = ProgressEvents(p, [case], processes=2)
        # as run_cases calls it: the slots to come, the start, the slots to come once it ran, the end
        for slot, before, after in ((0, [1], [1]), (1, [], [2])):  # after process 2: case 0 wants a third
            ev.schedule(before)
            ev.case_start(slot, 2, case)
            ev.schedule(after)
            ev.case_end(slot, "ok", "")
        assert p.tasks[0].total == 3 and p.tasks[0].completed == 2
        ev.case_start(2, 3, case)
        assert "process 3 (-r auto: more)" in p.tasks[0].description


@pytest.mark.parametrize("flags, says", [
    (["-r", "auto", "--processes", "2", "--max-processes", "1"], "--max-processes must be >= --processes (2)"),
    (["-r", "5", "--processes", "2", "--max-processes", "4"], "--max-processes needs -r auto"),
    (["-r", "auto", "--max-processes", "4"], "--max-processes needs --processes 2 or more"),
    (["-r", "auto", "--processes", "2", "--max-processes", "x"], "--max-processes"),
])
def test_max_processes_combinations_are_checked(tmp_path, capsys, flags, says):
    assert main(["run", "-m", "x.fake", "--backend", "fake", *flags, "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert says in err and err.startswith("edgebench: error:") and len(err.strip().splitlines()) == 1
