"""Run bundles: DIR/<run_id>/ with run.json, summary.csv and samples.csv, from the store.

A bundle is self-contained (run metadata + raw samples + summary) so another store can ingest it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from edgebench.records import SCHEMA_VERSION, SUMMARY_COLUMNS, Sample
from edgebench.store.database import SAMPLE_COLUMNS, Store


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


def write_run_json(store: Store, run_id: str, run_dir: Path, extra: dict[str, Any] | None = None) -> Path:
    """run.json from the store, written to a temporary name and renamed. It is rewritten after every
    case of a run, so it is written case by case (no second copy of the cases, no one big string):
    the parent's memory must not grow with the number of cases. ``extra``: keys the run that is
    writing it adds before the cases (its harness "overhead")."""
    run = store.get_run(run_id)
    head = {
        "schema_version": SCHEMA_VERSION, "run_id": run.run_id, "created_at": run.created_at,
        "finished_at": run.finished_at, "status": run.status, "device": run.device,
        "spec": run.spec, "environment": run.env, **(extra or {}), "cases": [],
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "run.json"
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        text = json.dumps(head, indent=2, default=str)
        f.write(text[: text.rindex("[]")] + "[")  # the document up to its cases list
        k = -1
        for k, c in enumerate(store.iter_cases(run.run_id)):
            c.pop("run_id", None)
            f.write(("," if k else "") + "\n    " + json.dumps(c, indent=2, default=str).replace("\n", "\n    "))
        f.write("\n  ]\n}" if k >= 0 else "]\n}")
    tmp.replace(path)
    return path


def write_bundle(store: Store, run_id: str, run_dir: Path, summary_rows: list[dict[str, Any]], samples,
                 ops_rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
    """The whole run folder: run.json from the store, the summary and op rows given (computed on read by
    edgebench.analysis), samples.csv from ``samples`` (a DataFrame of the run's samples). Each file is
    written to a temporary name and renamed, so a reader never sees half a file."""
    write_run_json(store, run_id, run_dir, extra)
    write_csv(run_dir / "summary.csv", summary_rows)
    tmp = run_dir / "samples.csv.tmp"
    samples.to_csv(tmp, index=False, columns=list(SAMPLE_COLUMNS))
    tmp.replace(run_dir / "samples.csv")
    if ops_rows:
        write_csv(run_dir / "ops.csv", ops_rows, columns=tuple(ops_rows[0]))


def start_samples_csv(run_dir: Path, samples) -> None:
    """samples.csv at the start of a run (or a resume): the rows of ``samples`` (a DataFrame: the
    cases already measured), header first; cases then append theirs (append_samples_csv)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / "samples.csv.tmp"
    samples.to_csv(tmp, index=False, columns=list(SAMPLE_COLUMNS))
    tmp.replace(run_dir / "samples.csv")


def append_samples_csv(run_dir: Path, run_id: str, case_id: int, case_samples: list[Sample]) -> None:
    """Append one case's samples to samples.csv as soon as the case is stored, so the folder of a
    run that crashed holds every finished case. Flushed and fsynced: a crash loses no row."""
    import os

    with open(run_dir / "samples.csv", "a", newline="") as f:
        w = csv.writer(f)
        for s in case_samples:
            d = s.to_dict()
            w.writerow([run_id, case_id] + ["" if d[k] is None else d[k] for k in SAMPLE_COLUMNS[2:]])
        f.flush()
        os.fsync(f.fileno())


def ingest_bundle(store: Store, run_dir: Path, replace: bool = False) -> tuple[str, int]:
    """Load a run folder (run.json + samples.csv) written by another store, e.g. a device of a
    fleet: the whole bundle is checked first (edgebench.store.ingest) and written in one
    transaction, so a bad part stores nothing. Idempotent, keyed by run_id: the same bundle again
    replaces itself. A bundle holding fewer finished cases than the stored run (an older copy) is
    refused unless ``replace``. Returns (run_id, number of cases)."""
    from edgebench.store.ingest import read_bundle

    run, case_rows, sample_rows = read_bundle(Path(run_dir))
    store.put_run(run, case_rows, sample_rows, replace=replace)
    return run["run_id"], len(case_rows)
