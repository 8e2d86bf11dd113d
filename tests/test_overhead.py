"""What the harness itself spends, outside the timed reps, is measured and shown (issue 17 part 2):
in run.json ("overhead": per worker slot and in total) and on the terminal's last line."""

from __future__ import annotations

import json

import pytest

from edgebench.analysis.per_rep import t975
from edgebench.cli import main
from edgebench.run.session import OVERHEAD_PARTS


def test_overhead_parts_are_present_non_negative_and_within_the_wall_time(tmp_path, capsys):
    model = tmp_path / "m.fake"
    model.write_text(json.dumps({"prefill_us_per_token": 20, "decode_us": 300}))
    out = tmp_path / "out"
    code = main(["run", "-m", str(model), "--backend", "fake", "-p", "64", "-n", "8", "-d", "0,256", "-r", "3",
                 "-o", str(out), "--no-report"])
    err = capsys.readouterr().err
    assert code == 0, err
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    o = json.loads((run_dir / "run.json").read_text())["overhead"]
    assert set(o["parts"]) == set(OVERHEAD_PARTS) and all(v >= 0 for v in o["parts"].values())
    assert o["parts"]["startup_s"] > 0 and o["parts"]["load_s"] > 0 and o["parts"]["store_s"] > 0
    assert o["harness_s"] + o["timed_s"] + o["cooldown_s"] <= o["wall_s"]
    assert 0 < o["timed_fraction"] < 1 and o["timed_fraction"] == pytest.approx(o["timed_s"] / o["wall_s"], abs=1e-3)
    assert [c["case_id"] for c in o["cases"]] == [0, 1]
    for c in o["cases"]:
        parts = [c.get(p, 0.0) for p in OVERHEAD_PARTS]
        assert all(v >= 0 for v in parts) and sum(parts) + c["timed_s"] <= c["wall_s"]
        # the timed reps: 3 x (64 prefill tokens x 20 us + 8 steps x 300 us) of busy-waiting, at least
        assert c["timed_s"] >= 3 * (64 * 20e-6 + 8 * 300e-6)
    last = " ".join(err.strip().splitlines()[-2:])  # rich may wrap the last line
    assert "harness overhead" in last and "timed reps" in last


def test_the_t_quantile_needs_no_scipy_and_matches_it():
    from scipy.stats import t

    for df in list(range(1, 60)) + [100, 1000]:
        assert t975(df) == pytest.approx(t.ppf(0.975, df), rel=1e-6)
