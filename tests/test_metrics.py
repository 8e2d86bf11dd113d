"""One definition per metric: `show`, `report` and `compare` print the same number for the same
metric of the same case (edgebench.analysis.per_rep defines the per-rep values and FIELDS the
center over reps), on the committed golden runs and on one with energy and per-rep RSS peaks."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgebench.analysis import compare as cmp
from edgebench.analysis import per_rep
from edgebench.cli import main
from edgebench.present import format as fmt
from edgebench.records import FIELDS, case_label
from edgebench.store.bundle import ingest_bundle
from edgebench.store.database import Store

GOLDEN = Path(__file__).parent / "data" / "golden"
COMPARED = tuple(m for m, f in FIELDS.items() if f.compared)


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def with_energy(tmp_path: Path) -> Path:
    """golden base plus whole-device energy per phase and per-rep RSS peaks above the load peak,
    where the old copies of the definitions disagreed (max vs mean of RSS)."""
    out = tmp_path / "energy"
    out.mkdir()
    shutil.copy(GOLDEN / "base" / "run.json", out / "run.json")
    s = pd.read_csv(GOLDEN / "base" / "samples.csv")
    rng = np.random.default_rng(7)
    extra = []
    for (rid, cid), _ in s.groupby(["run_id", "case_id"]):
        for rep in range(5):
            for phase in ("prefill", "decode"):
                extra.append(dict(run_id=rid, case_id=cid, rep=rep, phase=phase, metric="energy_j", idx=0,
                                  label="total", value=float(rng.lognormal(0, 0.2)), t_ns=None))
            extra.append(dict(run_id=rid, case_id=cid, rep=rep, phase="decode", metric="rss_peak_bytes", idx=1,
                              label="", value=float(2e8 + rep * 1e7), t_ns=None))
    pd.concat([s, pd.DataFrame(extra)]).to_csv(out / "samples.csv", index=False)
    return out


def with_quality(tmp_path: Path) -> Path:
    """golden base plus per-token quality samples (phase "quality") scored with the real math on
    random logits, a different damage per case."""
    from edgebench.analysis import quality as q

    out = tmp_path / "quality"
    out.mkdir()
    shutil.copy(GOLDEN / "base" / "run.json", out / "run.json")
    s = pd.read_csv(GOLDEN / "base" / "samples.csv")
    rng = np.random.default_rng(3)
    extra = []
    for k, ((rid, cid), _) in enumerate(s.groupby(["run_id", "case_id"])):
        ref, t = rng.normal(0, 3, (120, 40)), rng.integers(0, 40, 120)
        sc = q.score(q.compress(ref, t, 40), ref + rng.normal(0, 0.3 * (k + 1), ref.shape), t)
        extra += [dict(run_id=rid, case_id=cid, rep=0, phase="quality", metric=m, idx=i, label="", value=float(v),
                       t_ns=None) for m in q.TOKEN_METRICS for i, v in enumerate(getattr(sc, m))]
    pd.concat([s, pd.DataFrame(extra)]).to_csv(out / "samples.csv", index=False)
    return out


def md_table(text: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the Markdown table whose header starts with ``first_header``."""
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(f"| {first_header} |"))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(head, (c.strip() for c in line.strip("|").split("|")))))
    return rows


@pytest.mark.parametrize("which", ["base", "energy", "quality"])
def test_show_report_and_compare_print_the_same_numbers(which, tmp_path, capsys):
    folder = {"base": lambda: GOLDEN / "base", "energy": lambda: with_energy(tmp_path),
              "quality": lambda: with_quality(tmp_path)}[which]()
    store = tmp_path / "store"
    run_id, _ = ingest_bundle(Store(store), folder)
    shown = json.loads(run_cli(capsys, "show", run_id, "--format", "json", "-o", store))
    shown_md = md_table(run_cli(capsys, "show", run_id, "--format", "md", "-o", store), "#")
    run_cli(capsys, "report", run_id, "--store", store, "--out", tmp_path / "report")
    with open(tmp_path / "report" / "summary.csv", newline="") as f:
        reported = list(csv.DictReader(f))
    report_md = md_table((tmp_path / "report" / "report.md").read_text(), "model")
    args = ("compare", folder, folder, "--metrics", ",".join(COMPARED))
    compared = json.loads(run_cli(capsys, *args, "--format", "json"))["rows"]
    compared_md = md_table(run_cli(capsys, *args, "--format", "md"), "case")

    checked = set()
    for row in compared:
        quant, metric = row["key_quant"], row["metric"]
        (s,) = [r for r in shown if r["quant"] == quant]
        (r,) = [r for r in reported if r["quant"] == quant]
        assert s[metric] == pytest.approx(row["baseline"], rel=1e-12), (quant, metric)
        assert float(r[metric]) == pytest.approx(row["baseline"], rel=1e-5), (quant, metric)  # CSV: 6 digits
        assert row["ratio"] == 1.0
        # and the same text: the compare cell is show's / the report's cell plus its unit
        (cell,) = [c["baseline"] for c in compared_md if c["metric"] == metric and quant in c["case"]]
        assert cell == fmt.with_unit(metric, s[metric])
        head = fmt.header(metric)
        for table in (shown_md, report_md):
            rows = [t for t in table if t.get("quant") == quant]
            if rows and head in rows[0]:
                assert cell.startswith(rows[0][head] + " ") or cell == rows[0][head], (metric, table)
                checked.add(metric)
    assert {"ttft_ms", "tpot_ms_p50", "rss_peak_bytes", "prefill_tok_s", "decode_tok_s"} <= checked
    if which == "quality":
        assert {"kld_mean", "same_top_p", "ppl_ratio"} <= checked
    if which == "energy":
        assert "j_per_token_decode" in checked
        # the peak over reps, load included: the per-rep RSS peaks above the load peak count
        assert all(s["rss_peak_bytes"] == pytest.approx(2e8 + 4e7) for s in shown)


def test_centers_follow_the_fields_table():
    values = {"ttft_ms": np.array([1.0, 2.0, 9.0]), "decode_tok_s": np.array([1.0, 2.0, 9.0]),
              "rss_peak_bytes": np.array([1.0, 2.0, 9.0])}
    assert per_rep.case_value("ttft_ms", values) == 2.0  # median: one stalled rep does not move it
    assert per_rep.case_value("decode_tok_s", values) == 4.0  # mean
    assert per_rep.case_value("rss_peak_bytes", values) == 9.0  # max
    assert per_rep.case_value("tpot_ms_p50", values) is None
    assert per_rep.spread("decode_tok_s", values) == pytest.approx(np.std([1, 2, 9], ddof=1))
    for name, spec in cmp.METRIC_SPECS.items():
        f = FIELDS[name]
        assert spec.higher_is_better == (f.direction == "higher") and spec.unit == f.unit and spec.exact == f.exact


def test_tpot_percentiles_are_per_rep():
    rows = [dict(rep=rep, phase="decode", metric="decode_step_ns", idx=i, label="", value=v * 1e6)
            for rep, steps in enumerate(((1, 1, 1, 10), (2, 2, 2, 2))) for i, v in enumerate(steps)]
    v = per_rep.rep_values(pd.DataFrame(rows), n_prompt=0, n_gen=4)
    assert list(v["tpot_ms_p50"]) == [1.0, 2.0]
    assert list(v["decode_tok_s"]) == pytest.approx([4 / 13e-3, 4 / 8e-3])


def test_one_formatter_and_one_case_label():
    assert fmt.cell("ttft_ms", 6.38239) == "6.38" and fmt.cell("tpot_ms_p50", 1.99965) == "2.00"
    assert fmt.cell("prefill_tok_s", 10032.1) == "10,032" and fmt.cell("decode_tok_s", 99.96) == "100"
    assert fmt.cell("rss_peak_bytes", 2**30) == "1,024.0" and fmt.with_unit("rss_peak_bytes", 2**30) == "1,024.0 MiB"
    assert fmt.with_unit("j_per_token_decode", 0.0149) == "14.9 mJ/token"
    assert fmt.cell("kv_share", 0.0614) == "6.1%" and fmt.cell("n_prompt", 512.0) == "512"
    assert fmt.cell("ttft_ms", None) == "-" and fmt.cell("ttft_ms", float("nan")) == "-"
    row = {"model": "smollm", "quant": "Q4_K_M", "n_threads": 4, "n_prompt": 512.0, "n_gen": 128, "depth": 0,
           "device": "orin", "ep": None}
    assert case_label(row, ("depth", "n_prompt", "n_threads", "quant", "model", "ep")) == "smollm Q4_K_M t=4 p=512 d=0"
    assert case_label(row, ("device", "model", "run_id")) == "orin smollm"
