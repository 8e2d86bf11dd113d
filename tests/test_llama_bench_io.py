"""llama-bench results in (store/llama_bench.py): real llama-bench outputs in each format
(tests/data/llama-bench, made by the command in its README) become imported runs whose numbers are
llama-bench's own, and they join an edgebench run of the same model file in compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgebench.cli import main
from edgebench.errors import InputError
from edgebench.store import llama_bench
from edgebench.store.database import Store

DATA = Path(__file__).parent / "data" / "llama-bench"
STEM = "smollm2-q4_1"


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", ["json", "jsonl", "sql", "csv"])
def test_each_format_reads_as_llama_bench_wrote_it(fmt):
    rows = llama_bench.read_results(DATA / f"{STEM}.{fmt}")
    assert [(r["n_prompt"], r["n_gen"]) for r in rows] == [(32, 0), (0, 8)]
    assert all(r["build_commit"] == "0c1e570" and r["model_size"] == 96576768 for r in rows)
    assert all(len(r["samples_ns"]) == (2 if fmt.startswith("json") else 0) for r in rows)
    (planned,) = llama_bench.plan_cases(rows)  # the pp and the tg test pair up into one case
    assert planned[1]["n_prompt"] == 32 and planned[2]["n_gen"] == 8


def test_quant_names_from_llama_model_desc():
    assert llama_bench.quant_from_desc("llama 256M Q4_1") == "Q4_1"
    assert llama_bench.quant_from_desc("qwen3 0.6B Q4_K - Medium") == "Q4_K_M"
    assert llama_bench.quant_from_desc("llama 1B all F32") == "F32"


def test_an_import_keeps_llama_bench_numbers(tmp_path):
    from edgebench.analysis.summary import summarize_run

    store = Store(tmp_path)
    run_id, n = llama_bench.ingest_results(store, DATA / f"{STEM}.json", "here")
    assert n == 1 and run_id.startswith("lb-20261201-")
    (row,) = summarize_run(store, run_id)
    doc = json.loads((DATA / f"{STEM}.json").read_text())
    assert row["prefill_tok_s"] == pytest.approx(doc[0]["avg_ts"], rel=1e-6)  # the same mean over samples_ns
    assert row["prefill_tok_s_std"] == pytest.approx(doc[0]["stddev_ts"], rel=1e-5)
    assert row["decode_tok_s"] == pytest.approx(doc[1]["avg_ts"], rel=1e-6)
    assert row["tpot_ms_p50"] is None  # llama-bench keeps no per-step times
    assert (row["test"], row["n_gpu_layers"], row["flash_attn"], row["quant"]) == ("pp32 tg8", 99, "auto", "Q4_1")
    assert row["weights_bytes"] == 96576768
    run = store.get_run(run_id)
    assert run.env["imported_from"] == "llama-bench" and run.env["build_commit"] == "0c1e570"
    assert run.env["cpu_info"] == doc[0]["cpu_info"]
    (case,) = store.get_cases(run_id)
    assert case["info"]["llama_bench"]["repack"] is True and case["info"]["llama_bench"]["samples"] == "per rep"
    assert llama_bench.ingest_results(store, DATA / f"{STEM}.json", "here") == (run_id, 1)  # idempotent
    assert len([r for r in store.list_runs() if r.run_id == run_id]) == 1


def _bad(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_hostile_or_malformed_files_are_one_line_errors(tmp_path):
    good = json.loads((DATA / f"{STEM}.json").read_text())
    sql = (DATA / f"{STEM}.sql").read_text()
    cases = {
        "a.json": "{not json",
        "b.json": "[]",
        "c.json": json.dumps([{"model_filename": "m.gguf"}]),
        "d.json": json.dumps([{**good[0], "samples_ns": ["x"]}]),
        "e.json": json.dumps([{**good[0], "type_k": "q9_9"}]),
        "f.sql": f"ATTACH DATABASE '{tmp_path / 'evil.db'}' AS evil; CREATE TABLE evil.t(x);" + sql,
        "g.sql": "PRAGMA writable_schema = 1;" + sql,
        "h.csv": "a,b\n1,2\n",
        "i.jsonl": "[1, 2]\n",
    }
    for name, text in cases.items():
        with pytest.raises(InputError) as e:
            llama_bench.ingest_results(Store(tmp_path / "st"), _bad(tmp_path, name, text), "here")
        assert "\n" not in str(e.value) and name in str(e.value), (name, str(e.value))
    assert not (tmp_path / "evil.db").exists()


def test_ingest_and_compare_with_an_edgebench_run_of_the_same_file(real_gguf, tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    out = tmp_path / "st"
    code, _, err = run_cli(capsys, "run", "-m", real_gguf, "-p", 32, "-n", 8, "-r", 2, "-t", 1, "-o", out)
    assert code == 0, err
    (ours,) = [r.run_id for r in Store(out).list_runs()]
    for fmt in ("json", "sql"):
        code, text, err = run_cli(capsys, "ingest", DATA / f"{STEM}.{fmt}", "-o", out, "--device",
                                  Store(out).get_run(ours).device)
        assert code == 0, err
        imported = text.split(":")[0]
        assert "(llama-bench)" in text
        code, table, err = run_cli(capsys, "compare", imported, ours, "-s", out, "-f", "json")
        assert code in (0, 3, 4), err  # what the comparison found, never a refusal (2)
        rows = json.loads(table)["rows"]
        metrics = {r["metric"] for r in rows if r["verdict"] != "missing"}
        assert {"prefill_tok_s", "decode_tok_s", "weights_bytes"} <= metrics, rows
        weights = next(r for r in rows if r["metric"] == "weights_bytes")
        assert weights["verdict"] == "ok"  # the same file: llama_model_size on both sides


def test_show_prints_llama_bench_markdown_layout(tmp_path, capsys):
    store = Store(tmp_path)
    run_id, _ = llama_bench.ingest_results(store, DATA / f"{STEM}.json", "here")
    code, out, err = run_cli(capsys, "show", run_id, "--format", "llama-bench", "-o", tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    real = (DATA / f"{STEM}.md").read_text().splitlines()
    assert lines[:2] == real[:2]  # llama-bench's own header and alignment row, byte for byte
    doc = json.loads((DATA / f"{STEM}.json").read_text())
    pp = f"{doc[0]['avg_ts']:.2f} ± {doc[0]['stddev_ts']:.2f}"
    tg = f"{doc[1]['avg_ts']:.2f} ± {doc[1]['stddev_ts']:.2f}"
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:4]]
    assert cells[0][1:] == ["92.10 MiB", "134.52 M", "CPU", "1", "pp32", pp]
    assert cells[1][1:] == ["92.10 MiB", "134.52 M", "CPU", "1", "tg8", tg]
    assert lines[-1] == "build: 0c1e570 (1)"


def test_report_works_on_an_imported_run(tmp_path, capsys):
    run_id, _ = llama_bench.ingest_results(Store(tmp_path / "st"), DATA / f"{STEM}.jsonl", "here")
    code, out, err = run_cli(capsys, "report", run_id, "-s", tmp_path / "st", "-o", tmp_path / "rep")
    assert code == 0, err
    from edgebench.present import format as fmt_

    md = (tmp_path / "rep" / "report.md").read_text()
    first = json.loads((DATA / f"{STEM}.jsonl").read_text().splitlines()[0])
    assert run_id in md and f"| {fmt_.cell('prefill_tok_s', first['avg_ts'])} |" in md  # llama-bench's number
