"""The results store: SQLAlchemy Core over SQLite (WAL) by default; the same code takes a
``postgresql://`` URL for a shared fleet database. Runs, cases and raw samples; nothing derived.

Writes are committed case by case, so a crash loses at most the case in flight; an ingested run
is written in one transaction (``put_run``). The schema's history is kept by Alembic
(edgebench.store.migrations): opening an older store upgrades it in place, after a backup copy.
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
from edgebench.store import run_ids

SQLITE_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file

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
    # when this store received the run (created here or ingested): "latest" is the run stored last,
    # whatever created_at a bundle claims (a board without a real-time clock, a hostile file)
    sa.Column("stored_at", sa.Float),
)

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
SAMPLE_COLUMNS = tuple(c.name for c in samples.columns)  # samples.csv's header, in this order


@dataclass(frozen=True)
class RunRow:
    run_id: str
    created_at: float
    finished_at: float | None
    status: str
    device: str
    spec: dict[str, Any]
    env: dict[str, Any]
    stored_at: float | None = None

    @property
    def verified(self) -> bool:
        """False for a run measured with --no-verify on a machine that is not its --device."""
        return (self.env or {}).get("device_verified", True) is not False

    @property
    def device_shown(self) -> str:
        """The device as every view names it: "jetson-orin-nano-8gb (unverified)" when not verified."""
        return self.device if self.verified else f"{self.device} (unverified)"


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
        path = None
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///"):])
            _check_sqlite_file(path, create)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InputError(f"cannot create the output folder {path.parent}: {e.strerror}") from None
        self.url = url
        self.engine = sa.create_engine(url)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        from edgebench.store import migrations

        try:
            migrations.ensure_schema(self.engine, metadata, path)
        except ValueError as e:  # a store this code cannot read or upgrade
            raise InputError(f"the results store {url} {e}: use another --out, or `edgebench ingest` its run folders") from None
        except sa.exc.DBAPIError as e:
            raise InputError(f"cannot open the results store {url}: {_one_line(e.orig)}") from None

    # -- writing -----------------------------------------------------------------------------
    def create_run(self, run_id: str, device: str, spec: dict, env: dict) -> None:
        with self.engine.begin() as c:
            c.execute(runs.insert().values(
                run_id=run_ids.check(run_id), created_at=time.time(), stored_at=time.time(), status="running", device=device,
                schema_version=SCHEMA_VERSION, spec_json=json.dumps(spec), env_json=json.dumps(env, default=str),
            ))

    def finish_run(self, run_id: str, status: str) -> None:
        with self.engine.begin() as c:
            c.execute(runs.update().where(runs.c.run_id == run_id).values(status=status, finished_at=time.time()))

    def save_case(self, run_id: str, case_id: int, case: Case, status: str, error: str,
                  info: dict, case_samples: Iterable[Sample], started_at: float, finished_at: float) -> None:
        """Write one case and all its samples in one transaction (replacing an earlier attempt)."""
        with self.engine.begin() as c:
            c.execute(samples.delete().where((samples.c.run_id == run_id) & (samples.c.case_id == case_id)))
            c.execute(cases.delete().where((cases.c.run_id == run_id) & (cases.c.case_id == case_id)))
            c.execute(cases.insert().values(case_row(run_id, case_id, case, status, error, info, started_at, finished_at)))
            batch = [sample_row(run_id, case_id, s) for s in case_samples]
            if batch:
                c.execute(samples.insert(), batch)

    def put_run(self, run: dict[str, Any], case_rows: list[dict[str, Any]], sample_rows: list[dict[str, Any]],
                replace: bool = False) -> None:
        """Store a whole run (an ingested bundle: ``run`` as the runs row, rows made by case_row and
        sample_row) in ONE transaction: all of it or, on any error, nothing. A run already stored is
        replaced, unless that would lose finished (ok) cases it holds and ``replace`` is false: then
        InputError says how many, and the store is unchanged. The same bundle again is a no-op in
        effect (its rows replace themselves)."""
        run_id = run["run_id"]
        with self.engine.begin() as c:
            ok_key = (cases.c.run_id == run_id) & (cases.c.status == "ok")
            stored_ok = set(c.execute(sa.select(cases.c.case_key).where(ok_key)).scalars())
            lost = stored_ok - {r["case_key"] for r in case_rows if r["status"] == "ok"}
            if lost and not replace:
                raise InputError(f"run {run_id} is stored with {len(lost)} finished case(s) this bundle does not have "
                                 f"as finished (an older copy?): nothing ingested; --replace to replace it anyway")
            c.execute(samples.delete().where(samples.c.run_id == run_id))  # children first (foreign keys)
            c.execute(cases.delete().where(cases.c.run_id == run_id))
            c.execute(runs.delete().where(runs.c.run_id == run_id))
            c.execute(runs.insert().values(**run, stored_at=time.time()))
            if case_rows:
                c.execute(cases.insert(), case_rows)
            if sample_rows:
                c.execute(samples.insert(), sample_rows)

    # -- reading -----------------------------------------------------------------------------
    def list_runs(self) -> list[RunRow]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(runs).order_by(runs.c.stored_at, runs.c.created_at)).mappings().all()
        return [_run_row(r) for r in rows]

    def get_run(self, run_id: str) -> RunRow:
        """The run ``run_id`` names: an exact id, a unique prefix (like git), or "latest" (the run
        this store received last). InputError for an id that is not a valid run id (it could be a
        path), no match, or an ambiguous prefix (naming the matches)."""
        with self.engine.connect() as c:
            if run_id == "latest":
                latest = sa.select(runs).order_by(runs.c.stored_at.desc(), runs.c.created_at.desc()).limit(1)
                r = c.execute(latest).mappings().first()
            else:
                run_ids.check(run_id)
                r = c.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().first()
                if r is None:
                    found = c.execute(sa.select(runs).where(runs.c.run_id.startswith(run_id, autoescape=True))
                                      .order_by(runs.c.run_id).limit(6)).mappings().all()
                    if len(found) > 1:
                        names = ", ".join(f["run_id"] for f in found[:5]) + (", ..." if len(found) > 5 else "")
                        raise InputError(f"run id prefix {run_id!r} matches several runs: {names}")
                    r = found[0] if found else None
        if r is None:
            raise InputError(f"no run {run_id!r} in {self.url}")
        run_ids.check(r["run_id"], f"stored in {self.url}")  # put there by an older edgebench's ingest
        return _run_row(r)

    def get_cases(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.iter_cases(run_id))

    def iter_cases(self, run_id: str):
        """The run's cases in case_id order, one at a time: run.json is rewritten after every case
        (store/bundle.py), and holding every case for that grew the parent with each case."""
        with self.engine.connect() as c:
            for r in c.execute(sa.select(cases).where(cases.c.run_id == run_id).order_by(cases.c.case_id)).mappings():
                d = dict(r)
                d["info"] = json.loads(d.pop("info_json") or "{}")
                d["profile"] = tuple(p for p in (d["profile"] or "").split(",") if p)
                yield d

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
    cur.execute("PRAGMA busy_timeout=10000")  # first: switching to WAL waits for other openers too
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")  # as PostgreSQL does: the same code must pass on both
    cur.close()


def _run_row(r) -> RunRow:
    return RunRow(r["run_id"], r["created_at"], r["finished_at"], r["status"], r["device"],
                  json.loads(r["spec_json"]), json.loads(r["env_json"]), r["stored_at"])


def case_row(run_id: str, case_id: int, case: Case, status: str, error: str, info: dict,
             started_at: float | None, finished_at: float | None) -> dict[str, Any]:
    """The cases-table row of one case (profile as comma-joined text, info as JSON)."""
    row = case.to_dict()
    row["profile"] = ",".join(case.profile)
    return dict(run_id=run_id, case_id=case_id, case_key=case.key(), status=status, error=error,
                started_at=started_at, finished_at=finished_at, info_json=json.dumps(info, default=str), **row)


def sample_row(run_id: str, case_id: int, s: Sample) -> dict[str, Any]:
    return dict(run_id=run_id, case_id=case_id, **s.to_dict())


def _check_sqlite_file(path: Path, create: bool) -> None:
    """Refuse, before SQLite touches it, a path that is not an SQLite database (a folder, a CSV, a
    truncated copy): SQLite would raise deep inside a command, and must never overwrite it."""
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a results store")
    if not path.exists():
        if not create:
            raise InputError(f"no results store at {path}")
        return
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise InputError(f"cannot read the results store {path}: {e.strerror}") from None
    if head and head != SQLITE_MAGIC:  # an empty file is an empty database
        raise InputError(f"{path} is not an SQLite database (edgebench's results store): "
                         f"left as it is; use another --out")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 200 else text[:197] + "..."
