"""-r auto (issue 17 part 2): repeat until the 95% CI of each throughput is within the target, a
first rep that is an outlier discarded as extra warmup and replaced, every decision recorded."""

from __future__ import annotations

import json

import pytest

from edgebench.analysis.per_rep import ci_halfwidth_rel
from edgebench.cli import main
from edgebench.errors import InputError
from edgebench.records import Sample
from edgebench.run.reps import DISCARDED_REP, MIN_AUTO_REPS, RepPlan, first_is_outlier
from edgebench.run.spec import build_spec


def _feed(plan: RepPlan, prefill_ns: list[int]) -> list[Sample]:
    """Drive the plan as the worker does, with a 100-token prefill of the given times; returns what it emitted."""
    out: list[Sample] = []
    rep = 0
    for ns in prefill_ns:
        if not plan.more():
            break
        plan.add(rep, ns, [], 100, 0, [Sample(rep, "prefill", "prefill_ns", ns)], out.extend)
        rep += 1
    plan.flush(out.extend)
    return out


def test_the_interval_is_the_t_interval():
    # mean 10, sd 1 over 4 values: t(0.975, 3) = 3.182 -> 3.182 * 1 / 2 / 10
    assert ci_halfwidth_rel([9, 11, 9, 11]) == pytest.approx(3.1824 * (4 / 3) ** 0.5 / 2 / 10, rel=1e-3)
    assert ci_halfwidth_rel([5.0]) is None


def test_auto_stops_as_soon_as_the_target_is_reached():
    plan = RepPlan(max_reps=20, target=0.02)
    out = _feed(plan, [1_000_000, 1_001_000, 999_000, 1_000_500] + [1_000_000] * 20)
    assert plan.stop == "target" and plan.info()["used"] == MIN_AUTO_REPS
    assert [s.rep for s in out] == [1, 2, 0]  # the first rep was held until judged, then kept
    assert plan.info()["ci_reached"]["prefill_tok_s"] <= 0.02


def test_a_noisy_case_stops_at_the_cap_and_says_so():
    plan = RepPlan(max_reps=6, target=0.001)
    _feed(plan, [1_000_000, 1_300_000, 800_000, 1_200_000, 900_000, 1_100_000, 1_000_000, 1_000_000])
    info = plan.info()
    assert info["stop"] == "max_reps" and info["used"] == 6 and info["ci_reached"]["prefill_tok_s"] > 0.001


def test_a_cold_first_rep_is_discarded_kept_and_replaced():
    plan = RepPlan(max_reps=20, target=0.02)
    out = _feed(plan, [3_000_000, 1_000_000, 1_001_000, 1_000_500, 1_000_000] + [1_000_000] * 10)
    info = plan.info()
    assert info["discarded"] == [0] and info["used"] == MIN_AUTO_REPS and info["measured"] == MIN_AUTO_REPS + 1
    discarded = [s for s in out if s.rep == DISCARDED_REP]
    assert [s.value for s in discarded] == [3_000_000]  # stored, never summarised
    assert first_is_outlier(3.0, [1.0, 1.01]) and not first_is_outlier(1.02, [1.0, 1.01])
    assert not first_is_outlier(1.3, [1.0, 1.2])  # within 3x the others' own spread


def test_fixed_reps_are_exactly_n_and_never_discard():
    plan = RepPlan(max_reps=5)
    out = _feed(plan, [3_000_000] + [1_000_000] * 9)
    assert [s.rep for s in out] == [0, 1, 2, 3, 4] and plan.info()["stop"] == "fixed"


def test_max_time_stops_after_the_rep_in_flight():
    plan = RepPlan(max_reps=50, target=1e-9, max_time_s=1e-9)
    _feed(plan, [1_000_000, 2_000_000, 3_000_000])
    assert plan.stop == "max_time" and plan.info()["measured"] == 1


@pytest.mark.parametrize("options, message", [
    ({"target_ci": "2%"}, "--target-ci needs -r auto"),
    ({"reps": "auto", "target_ci": "150%"}, "--target-ci must be"),
    ({"reps": "auto", "max_reps": 2}, "--max-reps must be >= 3"),
    ({"reps": "sometimes"}, "--reps"),
])
def test_bad_auto_options_are_one_clear_error(options, message):
    with pytest.raises(InputError, match=message):
        build_spec(options)


def test_auto_reps_end_to_end_on_the_fake_backend(tmp_path, capsys):
    model = tmp_path / "cold.fake"  # the warmup and the first timed rep 200 ms slower: a cold start
    model.write_text(json.dumps({"prefill_us_per_token": 20, "decode_us": 300, "slow_prefills": 2, "slow_us": 200_000}))
    out = tmp_path / "out"
    code = main(["run", "-m", str(model), "--backend", "fake", "-p", "64", "-n", "8", "-r", "auto", "--target-ci", "5%",
                 "--max-reps", "12", "-o", str(out), "--no-report"])
    assert code == 0, capsys.readouterr().err
    from edgebench.analysis.summary import summarize_run
    from edgebench.store.database import Store

    store = Store(out, create=False)
    run_id = store.list_runs()[0].run_id
    (case,) = store.get_cases(run_id)
    info = case["info"]["reps"]
    assert info["mode"] == "auto" and info["discarded"] == [0] and info["stop"] in ("target", "max_reps")
    (row,) = summarize_run(store, run_id)
    assert row["reps_used"] == info["used"] and row["reps_discarded"] == 1 and row["reps_stop"] == info["stop"]
    if info["stop"] == "target":  # a loaded machine may need every rep; then the cap says so
        assert row["ci_pct"] <= 5.0 and info["used"] < 12
    samples = store.get_samples(run_id)
    cold = samples[(samples["rep"] == DISCARDED_REP) & (samples["metric"] == "prefill_ns")]["value"]
    assert len(cold) == 1 and cold.iloc[0] > 200e6  # the cold rep is stored, outside the summary
    assert row["ttft_ms"] < 100
