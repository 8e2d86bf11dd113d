"""Run bundles: DIR/<run_id>/ with run.json, summary.csv and samples.csv, from the store.

A bundle is self-contained (run metadata + raw samples + summary) so another store can ingest it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from edgebench import stats
from edgebench.records import SCHEMA_VERSION, SUMMARY_COLUMNS
from edgebench.store import Store

SAMPLE_COLUMNS = ("run_id", "case_id", "rep", "phase", "metric", "idx", "label", "value", "t_ns")


def _fmt(v: Any) -> Any:
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
            w.writerow({k: _fmt(r.get(k)) for k in cols})
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


def export_run(store: Store, run_id: str, run_dir: Path) -> list[dict[str, Any]]:
    """Write the bundle; returns the summary rows."""
    rows = stats.summarize_run(store, run_id)
    write_run_json(store, run_id, run_dir)
    write_csv(run_dir / "summary.csv", rows)
    samples = store.get_samples(store.get_run(run_id).run_id)
    tmp = run_dir / "samples.csv.tmp"
    samples.to_csv(tmp, index=False, columns=list(SAMPLE_COLUMNS))
    tmp.replace(run_dir / "samples.csv")
    ops = ops_rows(rows, samples)
    if ops:
        write_csv(run_dir / "ops.csv", ops, columns=tuple(ops[0]))
    return rows


def ops_rows(rows: list[dict[str, Any]], samples) -> list[dict[str, Any]]:
    """Per-op time and share rows of every case the ops profiler ran on (ops.csv)."""
    if not (samples["metric"] == "op_ns").any():
        return []
    from edgebench.opstats import ops_csv_rows

    out: list[dict[str, Any]] = []
    for r in rows:
        s = samples[samples["case_id"] == r["case_id"]]
        if (s["metric"] == "op_ns").any():
            out.extend(ops_csv_rows(r, s))
    return out
