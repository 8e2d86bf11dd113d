"""Store upgrades (issue 16): a store written by an older edgebench is migrated in place by Alembic,
after a backup copy, and ends up exactly like a new store; on PostgreSQL too when
EDGEBENCH_TEST_PG_URL is set (tests/test_postgres.py's throwaway server)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from edgebench.cli import main
from edgebench.errors import InputError
from edgebench.store import migrations
from edgebench.store.database import Store, metadata

OLD_STORE = Path(__file__).parent / "data" / "stores" / "v0-a6517e5" / "edgebench.db"
OLD_RUN = "20261201-134406-2ede94"


def schema_diff(conn: sa.Connection) -> list:
    """What Alembic's autogenerate would change to make the database match database.py's tables."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    return compare_metadata(MigrationContext.configure(conn), metadata)


@pytest.fixture
def old_store(tmp_path) -> Path:
    shutil.copy(OLD_STORE, tmp_path / "edgebench.db")
    return tmp_path


def test_the_test_store_is_from_before_alembic():
    con = sqlite3.connect(OLD_STORE)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    columns = {r[1] for r in con.execute("PRAGMA table_info(cases)")}
    con.close()
    assert tables == {"runs", "cases", "samples"} and "test" not in columns


def test_an_older_store_is_migrated_in_place_after_a_backup(old_store, capsys):
    st = Store(old_store, create=False)
    backup = old_store / "edgebench.db.bak-v0"
    assert backup.exists()
    con = sqlite3.connect(backup)  # the backup is the old store as it was
    assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 24
    assert "alembic_version" not in {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    con.close()

    run = st.get_run("latest")
    assert run.run_id == OLD_RUN and run.status == "complete" and run.stored_at == run.created_at
    cases = st.get_cases(OLD_RUN)
    assert [(c["status"], c["n_threads"], c["test"], c["hub_repo"]) for c in cases] == [("ok", 1, "pg", ""), ("ok", 2, "pg", "")]
    assert len(st.get_samples(OLD_RUN)) == 24
    with st.engine.connect() as c:
        assert migrations.current_revision(c) == migrations.HEAD
        assert schema_diff(c) == []
    st.engine.dispose()

    Store(old_store, create=False).engine.dispose()  # at the head now: no second backup
    assert sorted(p.name for p in old_store.iterdir() if ".bak" in p.name) == ["edgebench.db.bak-v0"]
    assert main(["show", OLD_RUN[:8], "--out", str(old_store), "--format", "csv"]) == 0
    assert OLD_RUN in capsys.readouterr().out


def test_head_is_alembic_head():
    from alembic.script import ScriptDirectory

    assert ScriptDirectory(str(migrations.HERE)).get_current_head() == migrations.HEAD


def test_a_new_store_and_a_store_built_by_the_migrations_are_the_same(tmp_path):
    """create_all (a new store) and revisions 1..head from an empty database give one schema, so a
    Case field added to edgebench/records/ without a revision fails here."""
    from alembic import command

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with engine.connect() as conn:
        command.upgrade(migrations._config(conn, metadata), "head")
        conn.commit()
        assert schema_diff(conn) == [], "a column in database.py has no migration: add a revision to store/migrations/versions"
    with Store(tmp_path / "new.db").engine.connect() as conn:
        assert schema_diff(conn) == []


def test_a_store_from_a_newer_edgebench_is_refused_untouched(old_store):
    Store(old_store, create=False).engine.dispose()
    con = sqlite3.connect(old_store / "edgebench.db")
    con.execute("UPDATE alembic_version SET version_num = '99'")
    con.commit()
    con.close()
    before = (old_store / "edgebench.db").read_bytes()
    with pytest.raises(InputError, match="newer than this edgebench"):
        Store(old_store, create=False)
    assert (old_store / "edgebench.db").read_bytes() == before


def test_an_older_store_on_postgresql_is_migrated(pg_url):
    """The old SQLite store's rows in a PostgreSQL database with the pre-Alembic schema (revision 1's
    tables, no alembic_version), then opened: migrated, rows kept, schema as new."""
    from alembic import command

    engine = sa.create_engine(pg_url)
    old = sa.create_engine(f"sqlite:///{OLD_STORE}")
    with engine.begin() as conn:
        command.upgrade(migrations._config(conn, metadata), "1")
        conn.execute(sa.text("DROP TABLE alembic_version"))
        old_meta = sa.MetaData()
        old_meta.reflect(conn)
        with old.connect() as src:
            for table in ("runs", "cases", "samples"):
                rows = [dict(r) for r in src.execute(sa.text(f"SELECT * FROM {table}")).mappings()]
                conn.execute(old_meta.tables[table].insert(), rows)
    engine.dispose()
    st = Store(pg_url, create=False)
    assert [(c["n_threads"], c["test"]) for c in st.get_cases(OLD_RUN)] == [(1, "pg"), (2, "pg")]
    assert len(st.get_samples(OLD_RUN)) == 24 and st.get_run("latest").run_id == OLD_RUN
    with st.engine.connect() as c:
        assert migrations.current_revision(c) == migrations.HEAD and schema_diff(c) == []
    st.engine.dispose()


def test_a_store_that_cannot_be_backed_up_is_not_migrated(old_store, monkeypatch):
    """No backup, no migration (a read-only folder, a full disk): the store stays as it was."""
    def no_space(path, rev):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(migrations, "backup", no_space)
    before = (old_store / "edgebench.db").read_bytes()
    with pytest.raises(InputError, match="cannot be copied first"):
        Store(old_store, create=False)
    assert (old_store / "edgebench.db").read_bytes() == before
