"""Run bundles: DIR/<run_id>/ with run.json, summary.csv and samples.csv, from the store.

A bundle is self-contained (run metadata + raw samples + summary) so another store can ingest it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from edgebench.errors import InputError
from edgebench.records import SCHEMA_VERSION, SUMMARY_COLUMNS, Case, Sample
from edgebench.store import database as db
from edgebench.store.database import Store

SAMPLE_COLUMNS = ("run_id", "case_id", "rep", "phase", "metric", "idx", "label", "value", "t_ns")


def csv_cell(v: Any) -> Any:
    """A value as CSV text: the one encoding of every CSV edgebench writes (summary, ops, show --format csv)."""
    if isinstance(v, float):
        # whole numbers (bytes, counts) are written exactly; rates keep 6 significant digits
        return str(int(v)) if v.is_integer() and abs(v) < 2**63 else f"{v:.6g}"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v)
    return "" if v is None else v


def write_csv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None) -> Path:
    cols = list(columns or SUMMARY_COLUMNS)
    for r in rows:  # extra derived columns (ops shares, energy...) follow the fixed ones
        cols.extend(k for k in r if k not in cols)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: csv_cell(r.get(k)) for k in cols})
    tmp.replace(path)
    return path


def write_run_json(store: Store, run_id: str, run_dir: Path) -> Path:
    run = store.get_run(run_id)
    cases = store.get_cases(run.run_id)
    doc = {
        "schema_version": SCHEMA_VERSION, "run_id": run.run_id, "created_at": run.created_at,
        "finished_at": run.finished_at, "status": run.status, "device": run.device,
        "spec": run.spec, "environment": run.env,
        "cases": [{k: v for k, v in c.items() if k != "run_id"} for c in cases],
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "run.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(path)
    return path


def write_bundle(store: Store, run_id: str, run_dir: Path, summary_rows: list[dict[str, Any]], samples,
                 ops_rows: list[dict[str, Any]]) -> None:
    """The whole run folder: run.json from the store, the summary and op rows given (computed on read by
    edgebench.analysis), samples.csv from ``samples`` (a DataFrame of the run's samples). Each file is
    written to a temporary name and renamed, so a reader never sees half a file."""
    write_run_json(store, run_id, run_dir)
    write_csv(run_dir / "summary.csv", summary_rows)
    tmp = run_dir / "samples.csv.tmp"
    samples.to_csv(tmp, index=False, columns=list(SAMPLE_COLUMNS))
    tmp.replace(run_dir / "samples.csv")
    if ops_rows:
        write_csv(run_dir / "ops.csv", ops_rows, columns=tuple(ops_rows[0]))


def ingest_bundle(store: Store, run_dir: Path) -> tuple[str, int]:
    """Load a run folder (run.json + samples.csv) written by another store, e.g. a device of a
    fleet. Idempotent, keyed by run_id: ingesting the same bundle again replaces its cases.
    Returns (run_id, number of cases)."""
    import pandas as pd

    run_dir = Path(run_dir)
    try:
        doc = json.loads((run_dir / "run.json").read_text())
        samples_df = pd.read_csv(run_dir / "samples.csv")
    except (OSError, ValueError) as e:
        raise InputError(f"{run_dir} is not a run folder (run.json + samples.csv): {e}") from None
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{run_dir}: schema version {doc.get('schema_version')} is not {SCHEMA_VERSION}")
    run_id = doc["run_id"]
    with store.engine.begin() as c:  # replace the whole run: children first (foreign keys)
        c.execute(db.samples.delete().where(db.samples.c.run_id == run_id))
        c.execute(db.cases.delete().where(db.cases.c.run_id == run_id))
        c.execute(db.runs.delete().where(db.runs.c.run_id == run_id))
        c.execute(db.runs.insert().values(
            run_id=run_id, created_at=doc["created_at"], finished_at=doc.get("finished_at"),
            status=doc["status"], device=doc["device"], schema_version=SCHEMA_VERSION,
            spec_json=json.dumps(doc["spec"]), env_json=json.dumps(doc["environment"], default=str)))
    for c in doc["cases"]:
        case = Case.from_dict(c)
        rows = samples_df[samples_df["case_id"] == c["case_id"]]
        case_samples = [Sample(int(r.rep), r.phase, r.metric, float(r.value), int(r.idx),
                               "" if pd.isna(r.label) else str(r.label),
                               None if pd.isna(r.t_ns) else int(r.t_ns)) for r in rows.itertuples()]
        store.save_case(run_id, c["case_id"], case, c["status"], c["error"], c["info"], case_samples,
                       c.get("started_at") or 0.0, c.get("finished_at") or 0.0)
    return run_id, len(doc["cases"])
