"""The results store: SQLAlchemy Core over SQLite (WAL) by default; the same code takes a
``postgresql://`` URL for a shared fleet database. Runs, cases and raw samples; nothing derived.

Writes are committed case by case, so a crash loses at most the case in flight.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from edgebench.errors import InputError
from edgebench.records import SCHEMA_VERSION, Case, Sample

metadata = sa.MetaData()

runs = sa.Table(
    "runs", metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),  # unix seconds
    sa.Column("finished_at", sa.Float),
    sa.Column("status", sa.String(16), nullable=False),  # running | complete | partial | interrupted
    sa.Column("device", sa.String(128), nullable=False),
    sa.Column("schema_version", sa.Integer, nullable=False),
    sa.Column("spec_json", sa.Text, nullable=False),
    sa.Column("env_json", sa.Text, nullable=False),
)

_CASE_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(Case))
_CASE_TYPES = {int: sa.Integer, float: sa.Float, bool: sa.Boolean, str: sa.String(1024)}


def _case_columns() -> list[sa.Column]:
    import typing

    hints = typing.get_type_hints(Case)
    cols = []
    for f in dataclasses.fields(Case):
        t = hints[f.name]
        # tuples (profile) are stored as comma-joined text
        cols.append(sa.Column(f.name, _CASE_TYPES.get(t, sa.String(1024))))
    return cols


cases = sa.Table(
    "cases", metadata,
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), primary_key=True),
    sa.Column("case_id", sa.Integer, primary_key=True),
    sa.Column("case_key", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # ok | failed | skipped
    sa.Column("error", sa.Text, nullable=False, default=""),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("info_json", sa.Text, nullable=False, default="{}"),  # ModelInfo, memory, versions
    *_case_columns(),
)

samples = sa.Table(
    "samples", metadata,
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("case_id", sa.Integer, nullable=False),
    sa.Column("rep", sa.Integer, nullable=False),
    sa.Column("phase", sa.String(16), nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("idx", sa.Integer, nullable=False),
    sa.Column("label", sa.String(256), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("t_ns", sa.BigInteger),
    sa.Index("ix_samples_case", "run_id", "case_id"),
)


@dataclass(frozen=True)
class RunRow:
    run_id: str
    created_at: float
    finished_at: float | None
    status: str
    device: str
    spec: dict[str, Any]
    env: dict[str, Any]


def store_url(target: str | Path) -> str:
    """A database URL from a URL or a folder / .db path (folder -> folder/edgebench.db)."""
    s = str(target)
    if "://" in s:
        return s
    p = Path(s)
    if p.suffix != ".db":
        p = p / "edgebench.db"
    return f"sqlite:///{p}"


class Store:
    def __init__(self, target: str | Path, create: bool = True):
        url = store_url(target)
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///"):])
            if not create and not path.exists():
                raise InputError(f"no results store at {path}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InputError(f"cannot create the output folder {path.parent}: {e.strerror}") from None
        self.url = url
        self.engine = sa.create_engine(url)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            metadata.create_all(self.engine)
            have = {c["name"] for c in sa.inspect(self.engine).get_columns("cases")}
        except sa.exc.OperationalError as e:
            raise InputError(f"cannot open the results store {url}: {e.orig}") from None
        missing = sorted({c.name for c in cases.columns} - have)
        if missing and set(missing) <= _CASE_FIELD_NAMES:
            self._add_case_columns(missing)  # a Case field added since: its default fills old rows
        elif missing:  # not a store this code can upgrade
            raise InputError(f"the results store {url} was written by an older edgebench (no column "
                             f"{', '.join(missing)}): use another --out, or `edgebench ingest` its run folders")

    def _add_case_columns(self, names: list[str]) -> None:
        """ALTER TABLE cases ADD COLUMN for Case fields newer than the store, each with its default,
        so old rows read as cases measured with the default (which they were)."""
        defaults = {f.name: f.default for f in dataclasses.fields(Case)}
        dialect = self.engine.dialect
        for name in names:
            col = cases.c[name]
            default = defaults[name]
            literal = ("''" if isinstance(default, tuple) else
                       sa.literal(default).compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            ddl = f"ALTER TABLE cases ADD COLUMN {dialect.identifier_preparer.quote(name)} " \
                  f"{col.type.compile(dialect=dialect)} DEFAULT {literal}"
            try:
                with self.engine.begin() as c:
                    c.execute(sa.text(ddl))
            except (sa.exc.OperationalError, sa.exc.ProgrammingError):
                # another process added it first; anything else shows up in the check below
                if name not in {c["name"] for c in sa.inspect(self.engine).get_columns("cases")}:
                    raise

    # -- writing -----------------------------------------------------------------------------
    def create_run(self, run_id: str, device: str, spec: dict, env: dict) -> None:
        with self.engine.begin() as c:
            c.execute(runs.insert().values(
                run_id=run_id, created_at=time.time(), status="running", device=device,
                schema_version=SCHEMA_VERSION, spec_json=json.dumps(spec), env_json=json.dumps(env, default=str),
            ))

    def finish_run(self, run_id: str, status: str) -> None:
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id).values(status=status, finished_at=time.time()))

    def save_case(self, run_id: str, case_id: int, case: Case, status: str, error: str,
                  info: dict, case_samples: Iterable[Sample], started_at: float, finished_at: float) -> None:
        """Write one case and all its samples in one transaction (replacing an earlier attempt)."""
        row = case.to_dict()
        row["profile"] = ",".join(case.profile)
        with self.engine.begin() as c:
            c.execute(samples.delete().where((samples.c.run_id == run_id) & (samples.c.case_id == case_id)))
            c.execute(cases.delete().where((cases.c.run_id == run_id) & (cases.c.case_id == case_id)))
            c.execute(cases.insert().values(
                run_id=run_id, case_id=case_id, case_key=case.key(), status=status, error=error,
                started_at=started_at, finished_at=finished_at, info_json=json.dumps(info, default=str), **row,
            ))
            batch = [dict(run_id=run_id, case_id=case_id, **s.to_dict()) for s in case_samples]
            if batch:
                c.execute(samples.insert(), batch)

    # -- reading -----------------------------------------------------------------------------
    def list_runs(self) -> list[RunRow]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(runs).order_by(runs.c.created_at)).mappings().all()
        return [_run_row(r) for r in rows]

    def get_run(self, run_id: str) -> RunRow:
        with self.engine.connect() as c:
            if run_id == "latest":
                r = c.execute(sa.select(runs).order_by(runs.c.created_at.desc()).limit(1)).mappings().first()
            else:
                r = c.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
                if r is None:  # unique prefix, like git
                    found = c.execute(sa.select(runs).where(runs.c.run_id.like(f"{run_id}%"))).mappings().all()
                    r = found[0] if len(found) == 1 else None
        if r is None:
            raise InputError(f"no run {run_id!r} in {self.url}")
        return _run_row(r)

    def get_cases(self, run_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(cases).where(cases.c.run_id == run_id).order_by(cases.c.case_id)).mappings().all()
        out = []
        for r in rows:
            d = dict(r)
            d["info"] = json.loads(d.pop("info_json") or "{}")
            d["profile"] = tuple(p for p in (d["profile"] or "").split(",") if p)
            out.append(d)
        return out

    def get_samples(self, run_id: str, case_id: int | None = None):
        """Samples as a pandas DataFrame (columns: run_id, case_id, rep, phase, metric, idx, label, value, t_ns)."""
        import pandas as pd

        q = sa.select(samples).where(samples.c.run_id == run_id)
        if case_id is not None:
            q = q.where(samples.c.case_id == case_id)
        with self.engine.connect() as c:
            return pd.read_sql(q.order_by(samples.c.case_id, samples.c.rep, samples.c.phase, samples.c.idx), c)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")  # as PostgreSQL does: the same code must pass on both
    cur.close()


def _run_row(r) -> RunRow:
    return RunRow(r["run_id"], r["created_at"], r["finished_at"], r["status"], r["device"],
                  json.loads(r["spec_json"]), json.loads(r["env_json"]))
