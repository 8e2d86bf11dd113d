"""The terminal a person meets: the results table at 80, 120 and 200 columns (rich Console widths)
and in a pipe never cuts a number, gives every key field that varies a column (table and Markdown),
and `runs` prints run ids whole."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from edgebench.cli import main
from edgebench.present import format as fmt_
from edgebench.present import tables

SWEEP = ("--backend", "fake", "-p", "16", "-n", "4", "-r", "2", "--no-report", "-fa", "on,off", "-ub", "128,512")


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> tuple[str, list[dict]]:
    """A real four-case sweep on the fake backend (-fa on,off -ub 128,512), its store and rows."""
    tmp = tmp_path_factory.mktemp("terminal")
    model = tmp / "m.fake"
    model.write_text(json.dumps({"prefill_us_per_token": 10, "decode_us": 200}))
    out = tmp / "out"
    assert main(["run", "-m", str(model), *SWEEP, "-o", str(out)]) in (0, None)
    from edgebench.analysis.summary import summarize_run
    from edgebench.store.database import Store

    store = Store(out, create=False)
    (run,) = store.list_runs()
    return str(out), summarize_run(store, run.run_id)


def _render(rows, width: int) -> str:
    buf = io.StringIO()
    tables.print_table(rows, "title", Console(width=width, file=buf, force_terminal=False, color_system=None))
    return buf.getvalue()


@pytest.mark.parametrize("width", [80, 120, 200])
def test_no_number_is_cut_at_any_width(sweep, width):
    _, rows = sweep
    text = _render(rows, width)
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    ident, metrics, _ = tables.layout(rows)
    for r in rows:
        for c in metrics:
            assert fmt_.cell(c, r.get(c)) in text, (c, width)


def test_swept_key_fields_get_columns_and_shared_ones_a_line(sweep, capsys):
    _, rows = sweep
    ident, _, constant = tables.layout(rows)
    assert {"flash_attn", "n_ubatch"} <= set(ident)  # the four rows differ only there: they must show it
    assert "n_prompt" not in ident and constant["n_prompt"] == "16"
    text = _render(rows, 200)
    assert "all cases:" in text and "p=16" in text
    tables.print_rows(rows, "md")
    md = capsys.readouterr().out
    lines = [[c.strip() for c in ln.strip("|").split("|")] for ln in md.splitlines() if ln.startswith("|")]
    header, body = lines[0], lines[2:]
    fa, ub = header.index("fa"), header.index("ub")
    assert sorted((r[fa], r[ub]) for r in body) == [("off", "128"), ("off", "512"), ("on", "128"), ("on", "512")]


def test_a_narrow_terminal_stacks_tables_with_the_case_in_each(sweep):
    _, rows = sweep
    text = _render(rows, 80)
    headers = [line for line in text.splitlines() if line.startswith("┃ #")]
    assert len(headers) >= 2  # the measured columns did not fit in one table of 80 columns
    assert all(" fa " in h and " ub " in h for h in headers)


def test_in_a_pipe_runs_and_show_print_ids_whole(sweep, capsys):
    out, rows = sweep
    code, text, _ = run_cli(capsys, "runs", "-o", out)
    run_id = rows[0]["run_id"]
    assert code == 0 and any(run_id in line for line in text.splitlines())
    code, text, _ = run_cli(capsys, "show", "latest", "-o", out)
    assert code == 0 and run_id in text and "…" not in text


@pytest.mark.parametrize("width", [80, 120, 200])
def test_models_list_shows_every_value_whole(width, monkeypatch):
    from edgebench.models.presets import PRESETS

    buf = io.StringIO()
    monkeypatch.setattr(tables, "console_for_tables", lambda _w: Console(width=width, file=buf, color_system=None))
    tables.print_presets()
    text = buf.getvalue()
    assert "…" not in text
    for p in PRESETS.values():
        assert p.name in text and str(p.n_vocab) in text and str(p.n_ctx_train) in text
    if width >= 120:  # a table there; one line per preset below that
        assert any(line.split()[:3] == ["preset", "arch", "layers"] for line in text.splitlines())


@pytest.mark.parametrize(("args", "hint"), [
    (["-m", "smolm-135m"], "(did you mean smollm-135m?)"),
    (["--profile", "opps"], "(did you mean ops?)"),
    (["--device", "jetson-orin-nx16"], "(did you mean jetson-orin-nx-16gb?)"),
])
def test_a_misspelt_name_suggests_the_nearest(args, hint, capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", *args, "-o", tmp_path)
    assert code == 2 and hint in err and len(err.strip().splitlines()) == 1, err


def test_noise_warnings_are_one_line_per_kind():
    from edgebench.analysis.summary import cv_warnings

    rows = [{"case_id": i, "model": "m", "quant": "Q8_0", "prefill_cv": cv, "decode_cv": 0.2 if i == 2 else 0.01}
            for i, cv in enumerate((0.3, 0.05, 0.12))]
    assert cv_warnings(rows) == [
        "prefill coefficient of variation > 10% in cases 0 (30%), 2 (12%): the machine was noisy, "
        "consider more reps or a quieter machine",
        "decode coefficient of variation > 10% in case 2 (20%): the machine was noisy, consider more reps or a quieter machine",
    ]


def test_auto_reps_that_missed_the_target_are_one_line():
    from edgebench.analysis.summary import cv_warnings

    rows = [{"case_id": 0, "ci_pct": 8.84, "reps_stop": "max_reps"}, {"case_id": 1, "ci_pct": 1.3, "reps_stop": "target"},
            {"case_id": 2, "ci_pct": 4.5, "reps_stop": "max_time; processes max_time"},
            {"case_id": 3, "ci_pct": 1.0, "reps_stop": "fixed"}, {"case_id": 4, "ci_pct": 1.9, "reps_stop": "target,target"},
            {"case_id": 5, "ci_pct": 6.0, "reps_stop": "target; processes max_processes"}]
    assert cv_warnings(rows) == [
        "-r auto: cases 0 (8.8%, max_reps), 2 (4.5%, max_time; processes max_time), 5 (6.0%, target; processes "
        "max_processes) stopped before the interval reached --target-ci; ci_pct is the interval reached (raise "
        "--max-reps, --max-time or --max-processes, or use a quieter machine)"]


def test_long_paths_stay_on_one_line_in_a_log(tmp_path, capsys):
    """stderr in a pipe (a CI log): rich would break every line at 80 columns; a path is then not one
    line to copy or grep. The run's own lines keep whole paths."""
    model = tmp_path / "m.fake"
    model.write_text(json.dumps({"prefill_us_per_token": 10, "decode_us": 200}))
    out = tmp_path / ("a-folder-name-long-enough-to-pass-eighty-columns-" + "x" * 60) / "out"
    code, _, err = run_cli(capsys, "run", "-m", model, "--backend", "fake", "-p", "8", "-n", "2", "-r", "1",
                           "--no-report", "-o", out)
    assert code == 0, err
    lines = err.splitlines()
    assert any(l.startswith("run ") and str(out) in l for l in lines), err
    assert any(l.startswith("stored in ") and str(out / "edgebench.db") in l and "harness overhead" in l
               for l in lines), err
