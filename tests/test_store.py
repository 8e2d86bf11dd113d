"""The store upgrades itself for Case fields added since it was written, and refuses what it cannot read."""

from __future__ import annotations

import sqlite3

import pytest

from edgebench.errors import InputError
from edgebench.records import Case
from edgebench.store.database import Store


def test_a_store_without_newer_case_fields_gains_them_with_their_defaults(tmp_path):
    st = Store(tmp_path)
    st.create_run("r1", "dev", {}, {})
    st.save_case("r1", 0, Case(backend="fake", model="m", n_prompt=7), "ok", "", {}, [], 0.0, 1.0)
    st.engine.dispose()
    con = sqlite3.connect(tmp_path / "edgebench.db")
    for col in ("graph_opt", "ep"):  # as a store written before these fields (and Alembic) existed
        con.execute(f"ALTER TABLE cases DROP COLUMN {col}")
    con.execute("DROP TABLE alembic_version")
    con.commit()
    con.close()
    old = Store(tmp_path, create=False)
    (row,) = old.get_cases("r1")
    assert (row["graph_opt"], row["ep"], row["n_prompt"]) == ("all", "cpu", 7)
    old.save_case("r1", 1, Case(backend="fake", model="m", graph_opt="basic"), "ok", "", {}, [], 0.0, 1.0)
    assert [c["graph_opt"] for c in Store(tmp_path, create=False).get_cases("r1")] == ["all", "basic"]


def test_a_store_missing_core_columns_is_refused(tmp_path):
    con = sqlite3.connect(tmp_path / "edgebench.db")
    con.execute("CREATE TABLE cases (run_id TEXT, case_id INTEGER, backend TEXT)")
    con.commit()
    con.close()
    with pytest.raises(InputError, match="older edgebench"):
        Store(tmp_path, create=False)
