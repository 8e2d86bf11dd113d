"""The two sides of a comparison, loaded from wherever they live, and their per-rep values.

A side is a run id (or unique prefix, or 'latest') in a store, a run folder (run.json + samples.csv,
or summary.csv), or a summary/samples CSV file. Summaries are recomputed from raw samples where
there are any, exactly as for a run in the store; ``Side.case_samples`` gives a case's raw samples,
which edgebench.analysis.per_rep turns into per-rep values for the significance tests of
edgebench.analysis.compare.

A case run in several worker processes (`edgebench run --processes N`) says in its info which reps
each process ran; ``Side.case_processes`` gives them (from the store or run.json; a summary.csv
has no case info: such a side is compared rep by rep, as before), so compare can take the process,
not the rep, as the unit of its tests.

Never runs a model and never imports a backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebench.errors import InputError

# Metrics measured inside a process's timed reps (samples of rep >= 0 only), so each process has its
# own value: compare tests these by process. The load time and the once-per-case figures (buffer
# sizes, peaks that include the load) belong to no one process and stay per rep.
PROCESS_UNIT_METRICS = ("prefill_tok_s", "decode_tok_s", "ttft_ms", "tpot_ms_p50", "tpot_ms_p90", "tpot_ms_p99",
                        "j_per_token_prefill", "j_per_token_decode")


def num(v: Any) -> float | None:
    """A number from a store value or CSV text; None for blanks and NaN."""
    if isinstance(v, bool):
        return float(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def norm_key(v: Any) -> str:
    """Key values from the store (ints, bools) and from CSV text compare equal: 512 == '512' == 512.0."""
    if v is None or isinstance(v, bool):
        return "" if v is None else str(v)
    f = num(v)
    if f is not None:
        return str(int(f)) if f.is_integer() else repr(f)
    return "" if str(v).lower() == "nan" else str(v)


@dataclass
class Side:
    """One side of a comparison: its successful cases' summary rows, the rows of its cases that did
    not succeed (failed: crash, OOM, timeout; skipped: projected not to fit), and, when known, raw samples."""

    name: str
    rows: list[dict[str, Any]]
    samples: Any = None  # pandas DataFrame of Sample rows with run_id, case_id; None for summary-only
    not_ok: list[dict[str, Any]] = field(default_factory=list)  # status != "ok"; "status" and "error" say why
    # (run_id, case_id) -> the reps of each worker process, for cases run in several (--processes)
    processes: dict[tuple[str, int], list[list[int]]] = field(default_factory=dict)
    _by_case: dict = field(default_factory=dict, repr=False)

    def devices(self) -> set[str]:
        return {str(r.get("device")) for r in self.rows + self.not_ok}

    def case_samples(self, row: dict[str, Any]):
        if self.samples is None or not len(self.samples):
            return None
        if not self._by_case:
            self._by_case = {(str(r), int(c)): g for (r, c), g in self.samples.groupby(["run_id", "case_id"])}
        return self._by_case.get(_case_key(row))

    def case_processes(self, row: dict[str, Any]) -> list[list[int]] | None:
        """The reps of each worker process of the case of ``row`` when it ran in two or more
        processes and its raw samples are here, else None (compared rep by rep)."""
        groups = [g for g in self.processes.get(_case_key(row)) or () if g]
        return groups if len(groups) > 1 and self.case_samples(row) is not None else None

    def values(self, row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The case's per-rep values (per_rep.rep_values), and its per-process values when it ran
        in several processes here (process_values), else None."""
        from edgebench.analysis import per_rep

        reps = per_rep.rep_values(self.case_samples(row), num(row.get("n_prompt")) or 0, num(row.get("n_gen")) or 0)
        return reps, self.process_values(row)

    def process_values(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """Per-process values (numpy arrays, one value a process) of the PROCESS_UNIT_METRICS of
        the case of ``row``: each process's center (per_rep.center, the FIELDS rule) of the metric's
        per-rep values over its own reps; a TPOT percentile is each rep's statistic, then the
        process's center of those. None when the case did not run in several processes here."""
        import numpy as np

        from edgebench.analysis import per_rep

        groups = self.case_processes(row)
        if groups is None:
            return None
        s = self.case_samples(row)
        n_prompt, n_gen = num(row.get("n_prompt")) or 0, num(row.get("n_gen")) or 0
        per = per_rep.process_rep_values(s, groups, n_prompt, n_gen)
        out = {}
        for m in PROCESS_UNIT_METRICS:
            vals = [float(per_rep.center(m, v[m])) for v in per if m in v and v[m].size]
            if len(vals) == len(groups):
                out[m] = np.array(vals)
        return out


def units(name: str, b, c, bproc: dict | None, cproc: dict | None) -> tuple[Any, Any, str]:
    """The values a test of metric ``name`` runs on: each side's per-process values where it has
    them (``bproc``/``cproc``, Side.process_values), else its per-rep ones (``b``/``c``), and what a
    unit is: "rep", "process", or "baseline/candidate" where they differ ("process/rep")."""
    bp, cp = (bproc or {}).get(name), (cproc or {}).get(name)
    bu, cu = (b, "rep") if bp is None else (bp, "process"), (c, "rep") if cp is None else (cp, "process")
    return bu[0], cu[0], bu[1] if bu[1] == cu[1] else f"{bu[1]}/{cu[1]}"


def _case_key(row: dict[str, Any]) -> tuple[str, int]:
    return str(row.get("run_id")), int(num(row.get("case_id")) or 0)


def _processes(run_id: str, cases: list[dict[str, Any]]) -> dict[tuple[str, int], list[list[int]]]:
    """The reps of each worker process of the cases of a run that ran in several (case info)."""
    out = {}
    for c in cases:
        groups = (c.get("info") or {}).get("processes")
        if isinstance(groups, list) and len(groups) > 1:
            out[(str(run_id), int(c["case_id"]))] = [[int(r) for r in g] for g in groups]
    return out


def status(row: dict[str, Any]) -> str:
    return str(row.get("status") or "ok")


def _side(name: str, rows: list[dict[str, Any]], samples, processes: dict | None = None) -> Side:
    ok = [r for r in rows if status(r) == "ok"]
    if not rows:
        raise InputError(f"{name} has no case to compare")
    return Side(name, ok, samples, [r for r in rows if status(r) != "ok"], processes or {})


def _read_samples(path: Path):
    import pandas as pd

    try:
        s = pd.read_csv(path, dtype={"run_id": str, "label": str, "phase": str, "metric": str})
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read samples file {path}: {e}") from None
    missing = {"run_id", "case_id", "rep", "phase", "metric", "value"} - set(s.columns)
    if missing:
        raise InputError(f"{path} is not a samples file: no column(s) {', '.join(sorted(missing))}")
    return s


def _from_run_json(run_json: Path, samples_csv: Path, name: str) -> Side:
    import json

    from edgebench.analysis import summary

    try:
        doc = json.loads(run_json.read_text())
        run_id, device, cases = doc["run_id"], doc["device"], doc["cases"]
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"cannot read {run_json}: {type(e).__name__}: {e}") from None
    s = _read_samples(samples_csv)
    # Summaries are recomputed from the raw samples, exactly as for a run in the store.
    verified = (doc.get("environment") or {}).get("device_verified", True) is not False
    rows = [summary.summarize_case(run_id, device, c, s[(s["run_id"] == run_id) & (s["case_id"] == c["case_id"])],
                                   verified) for c in cases]
    return _side(name, rows, s, _processes(run_id, cases))


def _from_csv(path: Path, name: str) -> Side:
    import csv

    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = list(reader) if "metric" not in header else []
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    if "metric" in header and "value" in header:  # a samples file: its case keys live next to it
        if (path.parent / "run.json").is_file():
            return _from_run_json(path.parent / "run.json", path, name)
        if (path.parent / "summary.csv").is_file():
            keys = _from_csv(path.parent / "summary.csv", name)
            return _side(name, keys.rows + keys.not_ok, _read_samples(path))
        raise InputError(f"{path} holds raw samples but no case keys: pass its run folder, or keep "
                         f"run.json or summary.csv next to it")
    if "case_id" not in header or "device" not in header:
        raise InputError(f"{path} is neither a summary.csv nor a samples.csv of edgebench")
    sibling = path.parent / "samples.csv"
    samples = _read_samples(sibling) if sibling.is_file() and sibling != path else None
    if samples is not None and not set(samples["run_id"]) & {r.get("run_id") for r in rows}:
        samples = None  # samples of another run: compare on the summary only
    return _side(name, rows, samples)


def load_side(spec: str, store: str | Path = "reports") -> Side:
    """A run folder, a summary/samples CSV, or else a run id (or unique prefix, or 'latest') in ``store``."""
    p = Path(spec)
    if p.is_dir():
        if (p / "run.json").is_file() and (p / "samples.csv").is_file():
            return _from_run_json(p / "run.json", p / "samples.csv", spec)
        if (p / "summary.csv").is_file():
            return _from_csv(p / "summary.csv", spec)
        raise InputError(f"{spec} is not a run folder: it has neither run.json + samples.csv nor summary.csv")
    if p.is_file():
        return _from_csv(p, spec)
    if p.suffix or "/" in spec:
        raise InputError(f"no such run folder or file: {spec}")
    from edgebench.analysis import summary
    from edgebench.store.database import Store

    try:
        st = Store(store, create=False)
    except InputError as e:
        raise InputError(f"{spec!r} is not a folder or file, and there is {e}") from None
    run = st.get_run(spec)
    return _side(f"run {run.run_id}", summary.summarize_run(st, run.run_id), st.get_samples(run.run_id),
                 _processes(run.run_id, st.get_cases(run.run_id)))
