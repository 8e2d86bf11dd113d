"""llama-bench results in: its own output formats (-o json, jsonl, sql, csv) loaded into the store as
runs marked as imported from llama-bench, so compare and report work on them.

Formats (tools/llama-bench/llama-bench.cpp, test::get_fields()): one record per test with the build
(build_commit, build_number), the machine (cpu_info, gpu_info, backends), the model (model_filename,
model_type = llama_model_desc, model_size = llama_model_size, model_n_params), every flag, and the
timing: avg_ns / stddev_ns over the reps, plus ``samples_ns`` (one time per rep) in json and jsonl
only. csv and sql carry the mean alone: such a case is stored with its mean as one rep (and says so
in its info). The sql output is CREATE TABLE + INSERT statements: it is run in an in-memory SQLite
database whose authorizer allows nothing else (no ATTACH, no PRAGMA), never in the store.

Mapping (llama-bench's meaning of its tests, DESIGN.md): a pp test (n_prompt > 0, n_gen = 0) gives
prefill_ns per rep; a tg test (n_gen > 0, n_prompt = 0) gives decode_ns per rep (the n_gen steps
timed as one: llama-bench keeps no per-step time, so there are no TPOT percentiles). pp and tg
tests of the same settings pair up in order into one "split" case, as edgebench's -p / -n do
(run/plan.py tests()), so an edgebench run with the same flags joins case by case. A pg test
(both > 0) times prompt and generation as one and cannot be split: it is stored as skipped.
The model is matched to an edgebench case of the same file (file name and weight bytes) already
in the store, or described by the caller (``describe``, e.g. from the file when it is on this disk).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

from edgebench.errors import InputError
from edgebench.records import Case, Sample, pad_ctx
from edgebench.store import database as db
from edgebench.store.database import Store

SUFFIXES = (".json", ".jsonl", ".sql", ".csv")
IMPORTED_FROM = "llama-bench"
BACKEND = "llama-cpp"
_INT_FIELDS = ("build_number", "model_size", "model_n_params", "n_batch", "n_ubatch", "n_threads", "n_gpu_layers",
               "n_prompt", "n_gen", "n_depth", "avg_ns", "stddev_ns", "flash_attn")
_TIMING = ("test_time", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts", "samples_ns", "samples_ts")
_CASE_FLAGS = ("model_filename", "n_batch", "n_ubatch", "n_threads", "n_gpu_layers", "type_k", "type_v",
               "flash_attn", "n_depth")
_FLASH_ATTN = {-1: "auto", 0: "off", 1: "on"}  # llama_flash_attn_type
_MAX_BYTES = 64 << 20


def is_llama_bench_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SUFFIXES


# -- reading -------------------------------------------------------------------------------------
def read_results(path: Path) -> list[dict[str, Any]]:
    """The records of a llama-bench output file, typed (ints as ints), in file order. InputError
    (one line) for a file that is not llama-bench output."""
    try:
        if path.stat().st_size > _MAX_BYTES:
            raise InputError(f"{path}: larger than {_MAX_BYTES >> 20} MiB, not a llama-bench result file")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read: {e}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            rows = json.loads(text)
        elif suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".csv":
            rows = list(csv.DictReader(io.StringIO(text)))
        elif suffix == ".sql":
            rows = _read_sql(text)
        else:
            raise InputError(f"{path}: llama-bench results are {', '.join(SUFFIXES)}, got {suffix or 'no suffix'}")
    except (ValueError, csv.Error, sqlite3.Error) as e:
        raise InputError(f"{path}: not llama-bench {suffix[1:]} output: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(rows, list) or not rows:
        raise InputError(f"{path}: no llama-bench results in it")
    return [_typed(path, i + 1, r) for i, r in enumerate(rows)]


_SQL_ALLOWED = {sqlite3.SQLITE_CREATE_TABLE, sqlite3.SQLITE_INSERT, sqlite3.SQLITE_READ, sqlite3.SQLITE_SELECT,
                sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_UPDATE}


def _read_sql(text: str) -> list[dict[str, Any]]:
    """The llama_bench table of an -o sql file, run in memory with an authorizer that allows
    creating tables and inserting rows only."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.set_authorizer(lambda action, *_: sqlite3.SQLITE_OK if action in _SQL_ALLOWED else sqlite3.SQLITE_DENY)
        conn.executescript(text)
        conn.set_authorizer(None)
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM llama_bench ORDER BY rowid")]
    finally:
        conn.close()


def _typed(path: Path, n: int, row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise InputError(f"{path}: record {n} is not an object of llama-bench fields")
    missing = [f for f in ("model_filename", "n_prompt", "n_gen", "avg_ns", "n_threads") if f not in row]
    if missing:
        raise InputError(f"{path}: record {n} lacks {', '.join(missing)}: not llama-bench output")
    out = dict(row)
    try:
        for f in _INT_FIELDS:
            if f in out and out[f] not in (None, ""):
                out[f] = int(out[f])
        samples = out.get("samples_ns") or []
        if not isinstance(samples, list) or not all(isinstance(v, (int, float)) and v > 0 for v in samples):
            raise ValueError("samples_ns must be a list of positive times")
        out["samples_ns"] = [int(v) for v in samples]
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: record {n}: {e}") from None
    if out["n_prompt"] < 0 or out["n_gen"] < 0 or out["avg_ns"] <= 0:
        raise InputError(f"{path}: record {n}: n_prompt, n_gen and avg_ns must be positive")
    return out


# -- mapping -------------------------------------------------------------------------------------
def quant_from_desc(desc: str) -> str:
    """The quant level in llama_model_desc's "ARCH SIZE FTYPE": "llama 256M Q4_1" -> "Q4_1",
    "qwen3 0.6B Q4_K - Medium" -> "Q4_K_M", "llama 1B all F32" -> "F32"."""
    parts = str(desc).split(" ", 2)
    ftype = parts[2] if len(parts) == 3 else ""
    ftype = ftype.removeprefix("all ").replace(" (guessed)", "")
    m = re.match(r"(\S+) - (Small|Medium|Large)$", ftype)
    if m:
        return f"{m.group(1)}_{m.group(2)[0]}"
    return ftype.split(" ")[0].upper() if ftype else ""


def _group_key(r: dict[str, Any]) -> tuple:
    return tuple((k, json.dumps(v, sort_keys=True)) for k, v in sorted(r.items()) if k not in _TIMING + ("n_prompt", "n_gen"))


def plan_cases(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict | None, dict | None, dict | None]]:
    """(settings, pp record, tg record, pg record) per case: pp and tg tests of the same settings
    paired in file order (run/plan.py pairs -p and -n values the same way)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_group_key(r), []).append(r)
    out = []
    for members in groups.values():
        pp = [r for r in members if r["n_prompt"] and not r["n_gen"]]
        tg = [r for r in members if r["n_gen"] and not r["n_prompt"]]
        out += [(members[0], p, t, None) for p, t in itertools.zip_longest(pp, tg)]
        out += [(r, None, None, r) for r in members if r["n_prompt"] and r["n_gen"]]
    return out


def _case(path: Path, settings: dict[str, Any], pp: dict | None, tg: dict | None, pg: dict | None) -> Case:
    ngl = int(settings.get("n_gpu_layers", 99))
    kw = dict(backend=BACKEND, model=str(settings["model_filename"]), depth=int(settings.get("n_depth") or 0),
              n_prompt=(pp or pg or {}).get("n_prompt", 0), n_gen=(tg or pg or {}).get("n_gen", 0),
              test="pg" if pg else "split", n_batch=int(settings.get("n_batch", 2048)),
              n_ubatch=int(settings.get("n_ubatch", 512)), n_threads=int(settings["n_threads"]),
              n_gpu_layers=99 if ngl < 0 else ngl,  # -1: every layer, edgebench's 99
              flash_attn=_FLASH_ATTN.get(int(settings.get("flash_attn", -1)), "auto"),
              cache_type_k=str(settings.get("type_k", "f16")).lower(), cache_type_v=str(settings.get("type_v", "f16")).lower(),
              reps=max(1, *(len(r["samples_ns"]) for r in (pp, tg, pg) if r)), warmup=True)
    try:
        return Case(**kw)
    except ValueError as e:
        raise InputError(f"{path}: the record for {kw['model']!r}: {e}") from None


def _samples(pp: dict | None, tg: dict | None, model_size: int) -> list[Sample]:
    out = [Sample(-1, "load", "weights_bytes", float(model_size), label=IMPORTED_FROM)] if model_size else []
    for rec, phase, metric in ((pp, "prefill", "prefill_ns"), (tg, "decode", "decode_ns")):
        if rec:
            times = rec["samples_ns"] or [rec["avg_ns"]]
            out += [Sample(i, phase, metric, float(t)) for i, t in enumerate(times)]
    return out


def find_model(store: Store, filename: str, size: int) -> dict[str, Any] | None:
    """The model info of an edgebench case of the same file (same file name and weight bytes)
    in the store, newest run first, or None."""
    name = PurePath(filename).name
    for run in sorted(store.list_runs(), key=lambda r: r.created_at, reverse=True):
        if (run.env or {}).get("imported_from") == IMPORTED_FROM:
            continue
        for c in store.get_cases(run.run_id):
            info = (c.get("info") or {}).get("model") or {}
            if PurePath(str(c.get("model") or "")).name == name and info.get("model_bytes") == size:
                return {k: info.get(k) for k in ("model_name", "model_sha256", "quant", "arch", "bpw")}
    return None


def ingest_results(store: Store, path: Path, device: str,
                   describe: Callable[[str, int], dict[str, Any] | None] = lambda f, s: None) -> tuple[str, int]:
    """Store one llama-bench result file as a run (idempotent: the run id comes from the file's
    contents). ``device`` names the machine; ``describe(model_filename, model_size)`` may give
    the model's facts (model_name, model_sha256, quant) when no stored case has the same file.
    Returns (run_id, number of cases)."""
    rows = read_results(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    first = rows[0]
    stamp = re.sub(r"\D", "", str(first.get("test_time", "")))[:14] or time.strftime("%Y%m%d%H%M%S")
    run_id = f"lb-{stamp[:8]}-{stamp[8:14]}-{digest[:6]}"
    planned = plan_cases(rows)
    cases = [_case(path, *p) for p in planned]
    env = {"imported_from": IMPORTED_FROM, "source_file": str(path), "source_sha256": digest,
           **{k: first.get(k) for k in ("build_commit", "build_number", "cpu_info", "gpu_info", "backends")},
           "cpu_model": first.get("cpu_info"), "gpu_names": [g for g in str(first.get("gpu_info") or "").split(", ") if g]}
    spec = {"imported_from": IMPORTED_FROM, "models": sorted({c.model for c in cases}), "backends": [BACKEND]}
    with store.engine.begin() as c:  # the same file again replaces its run: children first
        for table in (db.samples, db.cases, db.runs):
            c.execute(table.delete().where(table.c.run_id == run_id))
    store.create_run(run_id, device, spec, env)
    facts: dict[tuple[str, int], dict[str, Any]] = {}
    for i, ((settings, pp, tg, pg), case) in enumerate(zip(planned, cases)):
        size = int(settings.get("model_size") or 0)
        key = (case.model, size)
        if key not in facts:
            facts[key] = find_model(store, case.model, size) or describe(case.model, size) or {}
        model = {"model_name": PurePath(case.model).stem, "quant": quant_from_desc(settings.get("model_type", "")),
                 "arch": str(settings.get("model_type", "")).split(" ")[0], "n_params": settings.get("model_n_params"),
                 "model_bytes": size or None, "n_ctx_runtime": pad_ctx(case.tokens_needed)}
        model.update({k: v for k, v in facts[key].items() if v})
        recs = [r for r in (pp, tg, pg) if r]
        info = {"model": model, "imported_from": IMPORTED_FROM,
                "llama_bench": {**{k: v for k, v in settings.items() if k not in _TIMING and k not in _CASE_FLAGS},
                                "tests": [{k: r.get(k) for k in ("n_prompt", "n_gen", "test_time", "avg_ns", "stddev_ns")}
                                          for r in recs],
                                "samples": "per rep" if all(r["samples_ns"] for r in recs) else "mean only (no samples_ns)"}}
        status, error = ("skipped", "llama-bench pg test: prompt and generation timed as one, not comparable "
                         "phase by phase") if pg else ("ok", "")
        store.save_case(run_id, i, case, status, error, info, [] if pg else _samples(pp, tg, size), time.time(), time.time())
    store.finish_run(run_id, "complete")
    return run_id, len(cases)
