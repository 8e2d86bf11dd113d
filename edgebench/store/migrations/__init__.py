"""Schema versions of the results store, kept by Alembic: the revision scripts in ``versions/`` are
the history, ``alembic_version`` in the store says where a store stands, and ``ensure_schema``
brings any store to the head when it is opened, so a store written by an older edgebench is
upgraded in place (after a backup copy) instead of refused.

Run programmatically (no alembic.ini on the user's machine): ``ensure_schema`` hands its own
connection to env.py through ``Config.attributes``. Creating and migrating happen inside one
transaction that holds the store's write lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory
lock), so many processes opening one new store at once do not race: the first creates the
schema, the others wait and find it there.

Stores written before Alembic (up to commit a6517e5) have no ``alembic_version``: they are
revision 0, and revision 1 brings them to the v1 shape. A new Case field needs a new revision
(tests/test_migrations.py checks that a migrated store equals the tables in database.py).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import sqlalchemy as sa

HERE = Path(__file__).parent
HEAD = "2"  # the newest revision in versions/ (tests/test_migrations.py checks it is Alembic's head)
_PG_LOCK_KEY = 0x656467656265  # "edgebe": one advisory lock id for edgebench's schema work


def current_revision(conn: sa.Connection) -> str | None:
    """The store's revision: None for an empty database, "0" for a store from before Alembic."""
    insp = sa.inspect(conn)
    if insp.has_table("alembic_version"):
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() or "0"
    return "0" if insp.get_table_names() else None


def ensure_schema(engine: sa.Engine, metadata: sa.MetaData, sqlite_path: Path | None) -> None:
    """Create the schema in an empty store, or migrate an older one to HEAD (SQLite: after copying
    it to ``<name>.bak-v<revision>``). Returns at once when the store is at HEAD. Blocks while
    another process holds the store's write lock. Raises ValueError (its text completes "the store
    ...") for a store written by a newer edgebench, a database edgebench did not write, or a store
    that cannot be backed up; nothing is changed then."""
    with engine.connect() as conn:
        if current_revision(conn) == HEAD:
            return
    with engine.connect() as conn:
        _lock(conn)  # from here to the commit no other process creates or migrates this store
        rev = current_revision(conn)
        if rev == HEAD:
            conn.rollback()
            return
        from alembic import command

        cfg = _config(conn, metadata)
        if rev is None:  # an empty database: today's tables, marked as the head revision
            metadata.create_all(conn)
            command.stamp(cfg, "head")
        else:
            _check_known(cfg, rev)
            if rev == "0":
                _check_pre_alembic(conn)
            if sqlite_path is not None:
                try:
                    backup(sqlite_path, rev)
                except (OSError, sqlite3.Error) as e:  # a read-only folder, a full disk: migrate nothing
                    raise ValueError(f"needs upgrading from revision {rev}, but cannot be copied first ({e})") from None
            command.upgrade(cfg, "head")  # from revision 0 (no alembic_version) too: revision 1 handles it
        conn.commit()


def backup(path: Path, rev: str) -> Path:
    """A consistent copy of the SQLite store (the backup API, so pages still in the WAL come along),
    named ``<name>.bak-v<rev>`` (-2, -3... when one exists already: an earlier backup is kept)."""
    dest = path.with_name(f"{path.name}.bak-v{rev}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.bak-v{rev}-{n}")
    src, dst = sqlite3.connect(path), sqlite3.connect(dest)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    shutil.copymode(path, dest)
    return dest


def add_missing_columns(table: str, columns: list[sa.Column]) -> None:
    """``op.add_column`` for each of ``columns`` the table lacks: stores from before Alembic may have
    some of them already (the Store used to add new Case columns itself). Each column carries its
    server default, so old rows read as cases measured with the default (which they were)."""
    from alembic import op

    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
    for col in columns:
        if col.name not in have:
            op.add_column(table, col)


# what every store written before Alembic has (revision 1 adds the Case columns it may lack)
_CORE_COLUMNS = {
    "runs": {"run_id", "created_at", "finished_at", "status", "device", "schema_version", "spec_json", "env_json"},
    "cases": {"run_id", "case_id", "case_key", "status", "error", "started_at", "finished_at", "info_json"},
    "samples": {"run_id", "case_id", "rep", "phase", "metric", "idx", "label", "value", "t_ns"},
}


def _check_pre_alembic(conn: sa.Connection) -> None:
    insp = sa.inspect(conn)
    for table, need in _CORE_COLUMNS.items():
        if not insp.has_table(table):
            raise ValueError(f"is not a store an older edgebench wrote (no table {table})")
        missing = need - {c["name"] for c in insp.get_columns(table)}
        if missing:
            raise ValueError(f"is not a store an older edgebench wrote (table {table} has no {', '.join(sorted(missing))})")


def _lock(conn: sa.Connection) -> None:
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    elif conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})


def _config(conn: sa.Connection, metadata: sa.MetaData):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = conn
    cfg.attributes["target_metadata"] = metadata
    return cfg


def _check_known(cfg, rev: str) -> None:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        known = rev == "0" or ScriptDirectory.from_config(cfg).get_revision(rev) is not None
    except CommandError:  # alembic's ResolutionError: a revision no script here names
        known = False
    if not known:
        raise ValueError(f"schema revision {rev!r}, newer than this edgebench's {HEAD}")
