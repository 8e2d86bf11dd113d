"""The same store code on PostgreSQL (a fleet's shared database). .ci/run starts a throwaway local
cluster and sets EDGEBENCH_TEST_PG_URL; without one this file is skipped with the reason."""

import json
import os

import pytest

from edgebench.cli import main

PG_URL = os.environ.get("EDGEBENCH_TEST_PG_URL")
pytestmark = pytest.mark.skipif(not PG_URL, reason="no PostgreSQL server (EDGEBENCH_TEST_PG_URL unset)")


def test_run_show_ingest_compare_on_postgres(tmp_path, capsys, pg_url):
    model = tmp_path / "m.fake"
    model.write_text(json.dumps({"prefill_us_per_token": 10, "decode_us": 200}))
    args = ["run", "-m", str(model), "--backend", "fake", "-p", "16", "-n", "4", "-r", "5", "--no-report"]
    assert main(args + ["-o", str(tmp_path / "out"), "--store", pg_url]) == 0
    capsys.readouterr()
    assert main(["show", "latest", "--format", "json", "--store", pg_url]) == 0
    assert [r["status"] for r in json.loads(capsys.readouterr().out)] == ["ok"]
    # a run made elsewhere (its own SQLite store) comes home through its run folder
    assert main(args + ["-o", str(tmp_path / "device")]) == 0
    (run_dir,) = [p for p in (tmp_path / "device").iterdir() if p.is_dir()]
    assert main(["ingest", str(run_dir), "--store", pg_url]) == 0
    assert main(["ingest", str(run_dir), "--store", pg_url]) == 0  # idempotent
    capsys.readouterr()
    assert main(["show", run_dir.name, "--format", "json", "--store", pg_url]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["decode_tok_s"] > 0
    from edgebench.store.database import Store

    assert len(Store(pg_url).list_runs()) == 2
    assert main(["compare", run_dir.name, "latest", "--store", pg_url]) in (0, 3)
