"""`edgebench export RUN --format parquet`: summary and samples as Parquet with typed columns, read
back with pyarrow; a clear exit-2 error when pyarrow is missing."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest

from edgebench.cli import main
from edgebench.store import llama_bench
from edgebench.store.database import Store

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
DATA = Path(__file__).parent / "data" / "llama-bench" / "smollm2-q4_1.json"


@pytest.fixture()
def store_with_run(tmp_path) -> tuple[Path, str]:
    """A store holding a real (imported llama-bench) run: real timings, no model run needed."""
    run_id, _ = llama_bench.ingest_results(Store(tmp_path / "st"), DATA, "here")
    return tmp_path / "st", run_id


def test_parquet_export_has_typed_columns(store_with_run, tmp_path, capsys):
    store, run_id = store_with_run
    dest = tmp_path / "out"
    assert main(["export", run_id, "--format", "parquet", "--dest", str(dest), "-o", str(store)]) == 0
    assert capsys.readouterr().out.split() == [str(dest / "summary.parquet"), str(dest / "samples.parquet")]
    summary = pq.read_table(dest / "summary.parquet")
    types = {f.name: f.type for f in summary.schema}
    assert types["n_prompt"] == pa.int64() and types["n_threads"] == pa.int64()
    assert types["prefill_tok_s"] == pa.float64() and types["tpot_ms_p50"] == pa.float64()  # null, still a number
    assert types["synthetic"] == pa.bool_() and types["model"] == pa.string()
    row = summary.to_pylist()[0]
    assert row["prefill_tok_s"] == pytest.approx(120.828233, rel=1e-6) and row["tpot_ms_p50"] is None
    samples = pq.read_table(dest / "samples.parquet")
    st = {f.name: f.type for f in samples.schema}
    assert (st["value"], st["rep"], st["t_ns"], st["metric"]) == (pa.float64(), pa.int32(), pa.int64(), pa.string())
    got = sorted((r["metric"], r["rep"], r["value"]) for r in samples.to_pylist() if r["rep"] >= 0)
    assert got == [("decode_ns", 0, 163698563.0), ("decode_ns", 1, 124757864.0),
                   ("prefill_ns", 0, 266299013.0), ("prefill_ns", 1, 263394445.0)]  # llama-bench's samples_ns


def test_csv_stays_the_default_and_takes_a_destination(store_with_run, tmp_path, capsys):
    store, run_id = store_with_run
    assert main(["export", run_id, "--dest", str(tmp_path / "csv"), "-o", str(store)]) == 0
    assert {p.name for p in (tmp_path / "csv").iterdir()} >= {"run.json", "summary.csv", "samples.csv"}


def test_without_pyarrow_parquet_is_bad_input(store_with_run, tmp_path, capsys, monkeypatch):
    store, run_id = store_with_run
    real_import = builtins.__import__

    def no_pyarrow(name, globals=None, *args, **kwargs):  # as if absent, for edgebench's own imports
        if name.startswith("pyarrow") and (globals or {}).get("__name__", "").startswith("edgebench"):
            raise ImportError(name)
        return real_import(name, globals, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    assert main(["export", run_id, "--format", "parquet", "--dest", str(tmp_path / "x"), "-o", str(store)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "edgebench: error: --format parquet needs pyarrow: pip install 'edgebench[parquet]'"
