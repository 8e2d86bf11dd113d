"""Parquet export of a run (`edgebench export RUN --format parquet`): summary.parquet (one row per
case) and samples.parquet (every raw sample), with typed columns so notebooks read numbers as
numbers: a Case field by its annotation, metrics as float64, counts as int64, flags as bool.
pyarrow is an extra (``pip install 'edgebench[parquet]'``); without it the export is bad input."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from edgebench.errors import InputError
from edgebench.records import FIELDS, Case

_INT_COLUMNS = ("case_id", "n_params", "model_bytes", "reps")
_BOOL_COLUMNS = ("synthetic",)


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError("--format parquet needs pyarrow: pip install 'edgebench[parquet]'") from None
    return pa, pq


def _column_type(pa, name: str, values: list[Any]):
    hints = typing.get_type_hints(Case)
    by_hint = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}
    if name in _INT_COLUMNS:
        return pa.int64()
    if name in _BOOL_COLUMNS:
        return pa.bool_()
    if name in {f.name for f in dataclasses.fields(Case)} and hints.get(name) in by_hint:
        return by_hint[hints[name]]
    f = FIELDS.get(name)
    if f is not None and (f.unit or f.fmt) and not any(isinstance(v, str) for v in values):
        return pa.float64()
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64() if any(isinstance(v, float) for v in present) else pa.int64()
    return pa.string()


def _cell(v: Any, typ, pa) -> Any:
    if v is None or (isinstance(v, float) and v != v and typ != pa.float64()):
        return None
    if typ == pa.string() and not isinstance(v, str):
        import json

        return json.dumps(v) if isinstance(v, (dict, list, tuple)) else str(v)
    if typ == pa.int64() and isinstance(v, float):
        return int(v) if v.is_integer() else None
    return v


def summary_table(rows: list[dict[str, Any]]):
    pa, _ = _pyarrow()
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    arrays, fields = [], []
    for c in cols:
        values = [r.get(c) for r in rows]
        typ = _column_type(pa, c, values)
        arrays.append(pa.array([_cell(v, typ, pa) for v in values], type=typ))
        fields.append(pa.field(c, typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def samples_table(samples):
    """The raw samples (a DataFrame of SAMPLE_COLUMNS) with their stored types; t_ns nullable."""
    pa, _ = _pyarrow()
    schema = pa.schema([("run_id", pa.string()), ("case_id", pa.int32()), ("rep", pa.int32()), ("phase", pa.string()),
                        ("metric", pa.string()), ("idx", pa.int32()), ("label", pa.string()), ("value", pa.float64()),
                        ("t_ns", pa.int64())])
    df = samples[[f.name for f in schema]].copy()
    df["t_ns"] = df["t_ns"].astype("Int64")
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


def write_parquet(rows: list[dict[str, Any]], samples, dest: Path) -> list[Path]:
    """summary.parquet and samples.parquet in ``dest`` (created); returns their paths."""
    _, pq = _pyarrow()
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name, table in (("summary.parquet", summary_table(rows)), ("samples.parquet", samples_table(samples))):
        path = dest / name
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
        out.append(path)
    return out
