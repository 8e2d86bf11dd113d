"""Reading a run folder (run.json + samples.csv) from outside: a fleet device's results, a copy
from a colleague, or a hostile file. Everything is checked before anything is written: the run id
is a run id (never a path), every value has the type and size its column holds (on SQLite and on
PostgreSQL, which enforces lengths and refuses NUL), every case is a valid Case and every sample
belongs to one of the bundle's cases. Any problem is one InputError line naming the file.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import typing
from pathlib import Path
from typing import Any

from edgebench.errors import InputError
from edgebench.records import SCHEMA_VERSION, Case, Sample
from edgebench.store import run_ids
from edgebench.store.database import SAMPLE_COLUMNS, case_row, sample_row

CASE_STATUSES = ("ok", "failed", "skipped")
MAX_TIME = 253402300799.0  # 9999-12-31: time.localtime (runs, report) handles every time up to it
_INT64 = 2**63
_RUN_STATUS = re.compile(r"[a-z_]{1,16}")
# longest text each column holds (runs.device, samples.phase / metric / label, the Case columns)
_MAX_DEVICE, _MAX_PHASE, _MAX_METRIC, _MAX_LABEL, _MAX_CASE_TEXT = 128, 16, 64, 256, 1024
_CASE_HINTS = typing.get_type_hints(Case)


class _Bad(Exception):
    """One problem in one place of the bundle (turned into the InputError line by read_bundle)."""


def read_bundle(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(runs row, cases rows, samples rows) of the run folder, ready for Store.put_run. Reads only;
    raises InputError (one line, at most about 300 characters) for anything it would not store."""
    run_dir = Path(run_dir)
    where = str(run_dir / "run.json")
    try:
        doc = json.loads((run_dir / "run.json").read_bytes().decode("utf-8"))
        run, case_list = _run(doc)
        case_rows = [_case(c, i, run["run_id"]) for i, c in enumerate(case_list)]
        ids = [r["case_id"] for r in case_rows]
        if len(set(ids)) != len(ids):
            raise _Bad("two cases have the same case_id")
        where = str(run_dir / "samples.csv")
        sample_rows = _samples(run_dir / "samples.csv", run["run_id"], set(ids))
    except FileNotFoundError as e:
        raise InputError(f"{run_dir} is not a run folder (run.json + samples.csv): no {Path(e.filename).name}") from None
    except OSError as e:
        raise InputError(f"{_tail(where)}: cannot read it: {e.strerror}") from None
    except (ValueError, RecursionError) as e:  # JSON, UTF-8
        raise InputError(f"{_tail(where)}: not valid JSON / UTF-8: {_short(str(e), 120)}") from None
    except _Bad as e:
        raise InputError(f"{_tail(where)}: {_short(str(e), 160)}") from None
    return run, case_rows, sample_rows


def _run(doc: Any) -> tuple[dict[str, Any], list[Any]]:
    if not isinstance(doc, dict):
        raise _Bad("not a JSON object")
    version = doc.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise _Bad(f"schema version {_short(repr(version), 20)} is not {SCHEMA_VERSION}")
    if not run_ids.is_valid(doc.get("run_id")):
        raise _Bad(f"{_short(repr(doc.get('run_id')), 60)} is not a valid run id (letters, digits, '.', '_', '-'; never a path)")
    status = doc.get("status")
    if not isinstance(status, str) or not _RUN_STATUS.fullmatch(status):
        raise _Bad("status must be a short lower-case word")
    for key in ("spec", "environment"):
        if not isinstance(doc.get(key), dict):
            raise _Bad(f"{key} must be a JSON object")
    if not isinstance(doc.get("cases"), list):
        raise _Bad("cases must be a list")
    run = dict(run_id=doc["run_id"], created_at=_time(doc.get("created_at"), "created_at", required=True),
               finished_at=_time(doc.get("finished_at"), "finished_at"), status=status,
               device=_text(doc.get("device"), "device", _MAX_DEVICE), schema_version=SCHEMA_VERSION,
               spec_json=json.dumps(doc["spec"]), env_json=json.dumps(doc["environment"], default=str))
    return run, doc["cases"]


def _case(c: Any, i: int, run_id: str) -> dict[str, Any]:
    if not isinstance(c, dict):
        raise _Bad(f"case {i} is not a JSON object")
    case_id = _int(c.get("case_id"), f"case {i}: case_id", lo=0)
    if c.get("status") not in CASE_STATUSES:
        raise _Bad(f"case {case_id}: status must be one of {', '.join(CASE_STATUSES)}")
    if not isinstance(c.get("error", ""), str) or "\x00" in c.get("error", ""):
        raise _Bad(f"case {case_id}: error must be text")
    if not isinstance(c.get("info", {}), dict):
        raise _Bad(f"case {case_id}: info must be a JSON object")
    for f in dataclasses.fields(Case):
        if f.name in c:
            _check_field(f.name, c[f.name], f"case {case_id}")
    try:
        case = Case.from_dict(c)
    except (TypeError, ValueError) as e:
        raise _Bad(f"case {case_id}: {_short(str(e), 120)}") from None
    return case_row(run_id, case_id, case, c["status"], c.get("error", ""), c.get("info", {}),
                    _time(c.get("started_at"), f"case {case_id}: started_at"),
                    _time(c.get("finished_at"), f"case {case_id}: finished_at"))


def _check_field(name: str, v: Any, where: str) -> None:
    """A Case field as its column holds it (Case validates meaning; this checks type and size)."""
    t = _CASE_HINTS[name]
    if t is bool:
        ok = isinstance(v, bool)
    elif t is int:
        ok = type(v) is int and -_INT64 <= v < _INT64
    elif t is float:
        ok = type(v) in (int, float) and math.isfinite(v)
    elif t is str:
        ok = isinstance(v, str) and len(v) <= _MAX_CASE_TEXT and "\x00" not in v
    else:  # tuple[str, ...]: the profile list, stored comma-joined
        ok = (isinstance(v, list) and all(isinstance(p, str) and p and "," not in p and "\x00" not in p for p in v)
              and len(",".join(v)) <= _MAX_CASE_TEXT)
    if not ok:
        raise _Bad(f"{where}: {name} = {_short(repr(v), 40)} is not a valid {getattr(t, '__name__', 'list of names')}")


def _samples(path: Path, run_id: str, case_ids: set[int]) -> list[dict[str, Any]]:
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None or tuple(header[:len(SAMPLE_COLUMNS)]) != SAMPLE_COLUMNS:
                raise _Bad(f"the header must start {','.join(SAMPLE_COLUMNS)}")
            for n, cells in enumerate(reader, start=2):
                if not cells:
                    continue
                rows.append(_sample(cells, f"line {n}", run_id, case_ids))
        except csv.Error as e:
            raise _Bad(f"not CSV: {e}") from None
    return rows


def _sample(cells: list[str], where: str, run_id: str, case_ids: set[int]) -> dict[str, Any]:
    if len(cells) < len(SAMPLE_COLUMNS):
        raise _Bad(f"{where}: {len(cells)} cells, expected {len(SAMPLE_COLUMNS)}")
    d = dict(zip(SAMPLE_COLUMNS, cells))
    if d["run_id"] != run_id:
        raise _Bad(f"{where}: run_id is not the run's ({run_id})")
    case_id = _int(d["case_id"], f"{where}: case_id")
    if case_id not in case_ids:
        raise _Bad(f"{where}: case_id {case_id} is not one of the run's cases")
    value = _float(d["value"], f"{where}: value")
    if math.isnan(value):
        raise _Bad(f"{where}: value is NaN")
    t_ns = None if d["t_ns"] == "" else _int(d["t_ns"], f"{where}: t_ns")
    s = Sample(_int(d["rep"], f"{where}: rep"), _text(d["phase"], f"{where}: phase", _MAX_PHASE),
               _text(d["metric"], f"{where}: metric", _MAX_METRIC), value, _int(d["idx"], f"{where}: idx"),
               _text(d["label"], f"{where}: label", _MAX_LABEL, empty=True), t_ns)
    return sample_row(run_id, case_id, s)


def _int(v: Any, where: str, lo: int = -_INT64) -> int:
    """An integer from JSON or a CSV cell ("5", or "5.0" as pandas writes a column holding blanks)."""
    if isinstance(v, str):
        try:
            v = int(v)
        except ValueError:
            v = _float(v, where)
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    if type(v) is not int or not lo <= v < _INT64:
        raise _Bad(f"{where} must be an integer >= {lo}" if lo == 0 else f"{where} must be a 64-bit integer")
    return v


def _float(v: str, where: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise _Bad(f"{where} is not a number: {_short(repr(v), 40)}") from None


def _time(v: Any, where: str, required: bool = False) -> float | None:
    if v is None and not required:
        return None
    if type(v) not in (int, float) or not 0 <= v <= MAX_TIME:  # NaN fails the comparison too
        raise _Bad(f"{where} must be a time in unix seconds (0 to year 9999)")
    return float(v)


def _text(v: Any, where: str, max_len: int, empty: bool = False) -> str:
    if not isinstance(v, str) or len(v) > max_len or "\x00" in v or (not v and not empty):
        raise _Bad(f"{where} must be text of {0 if empty else 1} to {max_len} characters")
    return v


def _tail(path: str, n: int = 100) -> str:
    """A long path cut at its start: the run folder and file name are the part that matters."""
    return path if len(path) <= n else "..." + path[-(n - 3):]


def _short(text: str, n: int = 100) -> str:
    """One line of at most n characters: messages quote hostile input."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 3] + "..."
