"""Hostile and unlucky stores and bundles (issue 14, items 1, 2, 5, 6): run ids that are paths,
a future created_at, a bundle with one bad case, an older copy of a run, many processes creating
one store at once, and a file at OUT/edgebench.db that is not SQLite."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import sqlite3
import time

import pytest

from edgebench.cli import main
from edgebench.errors import InputError
from edgebench.store import run_ids
from edgebench.store.database import Store

FAKE_RUN = ("--backend", "fake", "-p", "8", "-n", "2", "-r", "1", "-t", "1,2", "--no-report")


@pytest.fixture
def bundle(fake_run_bundle, tmp_path):
    """A copy of a real run folder (2 ok cases, fake backend: conftest.fake_run_bundle)."""
    dest = tmp_path / "bundle" / fake_run_bundle.name
    shutil.copytree(fake_run_bundle, dest)
    return dest


def edit_run_json(run_dir, change):
    doc = json.loads((run_dir / "run.json").read_text())
    change(doc)
    (run_dir / "run.json").write_text(json.dumps(doc))
    return doc


def one_line_error(capsys, code):
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("edgebench: error: ") and err.count("\n") == 1, err
    return err


def counts(store_dir):
    con = sqlite3.connect(store_dir / "edgebench.db")
    try:
        return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("runs", "cases", "samples"))
    finally:
        con.close()


# -- 1. run ids ----------------------------------------------------------------------------------
@pytest.mark.parametrize("rid", ["20261201-134406-2ede94", "lb-20261201-134406-abcdef", "r1", "my_run.2"])
def test_valid_run_ids(rid):
    assert run_ids.check(rid) == rid


@pytest.mark.parametrize("rid", ["../x", "/abs/path", "a/b", "..", "a..b", ".hidden", "a\x00b", "a\nb", "",
                                 "x" * 65, "a b", "-rf", "C:\\x", None, 7])
def test_run_ids_that_could_be_paths_are_refused(rid):
    with pytest.raises(InputError, match="not a valid run id"):
        run_ids.check(rid)


@pytest.mark.parametrize("rid", ["../x", "/tmp/evil"])
def test_ingest_refuses_a_traversal_run_id_and_writes_nothing(bundle, tmp_path, capsys, rid):
    edit_run_json(bundle, lambda d: d.update(run_id=rid))
    store = tmp_path / "store"
    err = one_line_error(capsys, main(["ingest", str(bundle), "-o", str(store)]))
    assert "not a valid run id" in err
    assert counts(store) == (0, 0, 0)


@pytest.mark.parametrize("argv", [["show", "../x"], ["export", "../x"], ["report", "/abs/x"],
                                  ["run", "--resume", "../x"]])
def test_lookups_refuse_a_traversal_run_id(bundle, tmp_path, capsys, argv):
    store = tmp_path / "store"
    assert main(["ingest", str(bundle), "-o", str(store)]) == 0
    capsys.readouterr()
    flag = "--store" if argv[0] == "report" else "--out"
    assert "not a valid run id" in one_line_error(capsys, main([*argv, flag, str(store)]))


def test_a_hostile_id_already_in_a_store_is_never_used_as_a_path(bundle, tmp_path, capsys):
    """As an older edgebench's ingest could have stored it: export/report of "latest" refuse it."""
    store = tmp_path / "store"
    assert main(["ingest", str(bundle), "-o", str(store)]) == 0
    con = sqlite3.connect(store / "edgebench.db")
    con.execute("PRAGMA foreign_keys=OFF")
    for t in ("runs", "cases", "samples"):
        con.execute(f"UPDATE {t} SET run_id = '../escaped'")
    con.commit()
    con.close()
    capsys.readouterr()
    assert "not a valid run id" in one_line_error(capsys, main(["export", "latest", "-o", str(store)]))
    assert "not a valid run id" in one_line_error(capsys, main(["report", "--store", str(store)]))
    assert not (tmp_path / "escaped").exists()


def test_a_future_created_at_does_not_make_a_run_latest(bundle, tmp_path):
    """"latest" is the run this store received last (runs.stored_at), not the largest created_at a
    bundle claims: a board without a real-time clock (or a hostile file) cannot take it over."""
    edit_run_json(bundle, lambda d: d.update(created_at=time.time() + 10 * 365 * 86400))
    st = Store(tmp_path / "store")
    from edgebench.store.bundle import ingest_bundle

    future_id, _ = ingest_bundle(st, bundle)
    st.create_run("20261201-000000-abcdef", "dev", {}, {})
    assert st.get_run("latest").run_id == "20261201-000000-abcdef"
    assert [r.run_id for r in st.list_runs()][-1] == "20261201-000000-abcdef"  # `runs` ends with latest
    assert st.get_run(future_id).created_at > time.time()  # kept as the bundle says


# -- 2. ingest is atomic and never loses finished cases -----------------------------------------------
def test_a_bundle_with_one_bad_case_stores_nothing(bundle, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["ingest", str(bundle), "-o", str(store)]) == 0
    before = counts(store)
    assert before[:2] == (1, 2) and before[2] > 0
    # the same run again, its last case broken: the stored run must stay exactly as it was
    edit_run_json(bundle, lambda d: d["cases"][-1].update(n_prompt=-1))
    capsys.readouterr()
    assert "n_prompt" in one_line_error(capsys, main(["ingest", str(bundle), "-o", str(store)]))
    assert counts(store) == before
    # and into an empty store: no run row marked complete with no cases
    assert main(["ingest", str(bundle), "-o", str(tmp_path / "empty")]) == 2
    assert counts(tmp_path / "empty") == (0, 0, 0)


def test_a_bad_sample_line_stores_nothing(bundle, tmp_path, capsys):
    with open(bundle / "samples.csv", "a") as f:
        f.write(f"{bundle.name},1,0,decode,decode_step_ns,99,,not-a-number,\n")
    store = tmp_path / "store"
    err = one_line_error(capsys, main(["ingest", str(bundle), "-o", str(store)]))
    assert "samples.csv" in err and "not a number" in err
    assert counts(store) == (0, 0, 0)


def test_an_older_copy_of_a_run_is_refused_without_replace(bundle, tmp_path, capsys):
    store = tmp_path / "store"
    older = tmp_path / "older" / bundle.name
    shutil.copytree(bundle, older)
    edit_run_json(older, lambda d: d["cases"][1].update(status="failed", error="interrupted"))
    assert main(["ingest", str(bundle), "-o", str(store)]) == 0
    before = counts(store)
    capsys.readouterr()
    err = one_line_error(capsys, main(["ingest", str(older), "-o", str(store)]))
    assert "1 finished case(s)" in err and "--replace" in err
    assert counts(store) == before
    assert main(["ingest", str(older), "--replace", "-o", str(store)]) == 0
    assert [c["status"] for c in Store(store, create=False).get_cases(bundle.name)] == ["ok", "failed"]


def test_ingesting_the_same_bundle_again_is_idempotent(bundle, tmp_path):
    store = tmp_path / "store"
    assert main(["ingest", str(bundle), "-o", str(store)]) == 0
    first = counts(store)
    assert main(["ingest", str(bundle), str(bundle), "-o", str(store)]) == 0
    assert counts(store) == first


# -- 5. many processes creating one new store at once -----------------------------------------------
def _open_store(path, start, results):
    start.wait()
    try:
        st = Store(path)
        st.create_run(f"r{multiprocessing.current_process().pid}", "dev", {}, {})
        results.put("ok")
    except Exception as e:  # the test reports what failed, whatever it was
        results.put(f"{type(e).__name__}: {e}")


def test_many_processes_create_one_new_store_at_once(tmp_path):
    import alembic.command  # noqa: F401 -- imported before the fork: each child starts at once

    n = 40
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_open_store, args=(tmp_path, start, results)) for _ in range(n)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert outcomes == ["ok"] * n, [o for o in outcomes if o != "ok"][:3]
    con = sqlite3.connect(tmp_path / "edgebench.db")
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == n
    assert con.execute("SELECT version_num FROM alembic_version").fetchall() == [("2",)]
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


# -- 6. a file that is not SQLite where the store should be ---------------------------------------------
@pytest.mark.parametrize("argv", [["runs"], ["show"], ["export"], ["report"], ["ingest", "{bundle}"],
                                  ["run", "-m", "{model}", *FAKE_RUN], ["run", "--resume", "20261201-134406-2ede94"],
                                  ["compare", "latest", "latest"]])
def test_a_store_that_is_not_sqlite_is_one_line_and_left_untouched(bundle, tmp_path, capsys, argv):
    out = tmp_path / "out"
    out.mkdir()
    junk = b"run_id,case_id\n" + bytes(range(256)) * 8  # a CSV someone saved under the store's name
    (out / "edgebench.db").write_bytes(junk)
    model = tmp_path / "m.fake"
    model.write_text("{}")
    args = [a.format(bundle=bundle, model=model) for a in argv]
    flag = "--store" if argv[0] in ("report", "compare") else "--out"
    err = one_line_error(capsys, main([*args, flag, str(out)]))
    assert "not an SQLite database" in err
    assert (out / "edgebench.db").read_bytes() == junk
    assert sorted(p.name for p in out.iterdir()) == ["edgebench.db"]
