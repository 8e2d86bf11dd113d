"""Regression verdicts between two sets of results (a CI gate, or a new model release vs the old).

Each side is a run id in a store, a run folder (run.json + samples.csv, or summary.csv), or a
summary/samples CSV file, loaded by edgebench.compare_sides. Cases are joined on
``records.KEY_FIELDS``; each metric (records.FIELDS, compared) has a direction and a center rule
(mean, median or max over reps). The baseline and candidate columns are each side's center of the
per-rep values (edgebench.analysis.per_rep: the very numbers the summary shows), the ratio is
theirs. A change is a *regression* only when it is worse than its threshold AND statistically
significant on the raw per-rep values: a two-sided Mann-Whitney U test whose verdict a bootstrap
confidence interval of the ratio of centers agrees with (the interval excludes 1). TPOT percentiles
are tested by rep: each rep's percentile of its steps is the statistic, and an exact permutation test
moves whole reps between the sides (the steps of one rep are not independent), its CI the bootstrap
by rep. The false discovery rate across the table is controlled: a row is significant when its
Benjamini-Hochberg adjusted p (over all tested rows) is below alpha. Deterministic metrics (buffer
sizes) have no noise, so any change past the threshold is real.

A change past the threshold that is not significant is *inconclusive* (compare exits 4, never 0)
when the test could not have shown it: no test (one rep on a side, no std in a summary), too few
reps for the smallest possible p to be below alpha, or a worse change that only some candidate reps
show, past the threshold beyond every baseline rep (an intermittent slowdown, e.g. a CPU hog hitting
some reps, that more reps would prove or disprove); otherwise it is *insignificant* (noise). A
baseline case that is missing, failed or skipped in the candidate is a regression unless
``Options.allow_missing``.

The unit of the tests is the rep, except for a case run in several worker processes (`run
--processes N`, its case info listing each process's reps): the reps of one process share its memory
layout, page cache and clock ramp, so they are not independent, and Mann-Whitney or a bootstrap on
the pooled reps would overstate significance. Where both sides ran the case in two or more
processes, its timing metrics (sides.PROCESS_UNIT_METRICS) are tested on per-process values (each
process's center over its reps), and n_baseline / n_candidate count processes; the inconclusive rule
applies to those counts (3 vs 3 processes cannot reach p < 0.05). Where only one side did, that
side's processes and the other side's reps are the units ("process/rep" or "rep/process"), and a
warning says the units differ: a single process's reps do not show the spread between processes, so
such a change can look more significant than it is. The baseline and candidate columns stay the
per-rep centers the summary shows. A side without case info (a summary.csv) is compared by rep.

Never runs a model and never imports a backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebench.analysis import per_rep
from edgebench.analysis.sides import Side, load_side, norm_key, num, status, units
from edgebench.analysis.significance import (
    benjamini_hochberg,
    intermittent,
    min_mannwhitney_p,
    test_from_summary,
    test_units,
)
from edgebench.errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_REGRESSION, InputError
from edgebench.records import FIELDS, KEY_FIELDS, case_label

VERDICTS = ("regression", "inconclusive", "improved", "insignificant", "ok", "missing")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool
    unit: str  # unit of the per-rep values and of the table: tok/s, ms, bytes, J/token
    exact: bool = False  # deterministic (one value per case): any change past the threshold is real


# Every compared metric of records.FIELDS; its center rule is FIELDS[name].center (per_rep.center).
METRIC_SPECS: dict[str, MetricSpec] = {
    f.name: MetricSpec(f.name, f.direction == "higher", f.unit, f.exact) for f in FIELDS.values() if f.compared
}
# Checked unless --metrics says otherwise; each only where both sides have it.
DEFAULT_METRICS = ("prefill_tok_s", "decode_tok_s", "tpot_ms_p50", "weights_bytes", "kv_bytes",
                   "compute_bytes", "rss_peak_bytes", "j_per_token_prefill", "j_per_token_decode",
                   "kld_mean", "same_top_p", "ppl_ratio")


@dataclass
class Options:
    threshold: float = 0.05  # fraction: 0.05 = 5% worse
    fail_on: dict[str, float] = field(default_factory=dict)  # per-metric thresholds (fractions)
    alpha: float = 0.05
    match: tuple[str, ...] = ()  # key fields left out of the join (e.g. "model")
    metrics: tuple[str, ...] = ()  # () = DEFAULT_METRICS + the --fail-on ones
    force: bool = False  # compare results from different devices
    allow_missing: bool = False  # a baseline case missing, failed or skipped in the candidate is no regression


@dataclass
class Row:
    key: dict[str, str]
    label: str
    metric: str
    unit: str
    baseline: float | None  # None on a case row (status != "ok": the candidate has no value)
    candidate: float | None
    ratio: float | None  # candidate / baseline
    change: float | None  # candidate / baseline - 1 (fraction); the metric's direction says if that is better
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str  # mannwhitney | permutation | welch | exact | none
    n_baseline: int
    n_candidate: int
    threshold: float
    verdict: str
    status: str = "ok"  # the candidate case's status: ok, failed, skipped, ... or missing (no such case)
    reason: str = ""  # why the candidate case did not succeed (its error)
    p_adjusted: float | None = None  # Benjamini-Hochberg over the table's tested rows
    test_unit: str = "rep"  # one value of the test: rep | process | process/rep | rep/process (base/cand)
    reachable: bool = field(default=True, repr=False)  # the test could give p < alpha with these reps
    intermittent: bool = field(default=False, repr=False)  # some candidate reps worse past the threshold

    def to_dict(self) -> dict[str, Any]:
        return {**{f"key_{k}": v for k, v in self.key.items()}, "case": self.label, "metric": self.metric,
                "unit": self.unit, "baseline": self.baseline, "candidate": self.candidate, "ratio": self.ratio,
                "change": self.change, "ci_low": self.ci_low, "ci_high": self.ci_high, "p_value": self.p_value,
                "p_adjusted": self.p_adjusted, "test": self.test, "test_unit": self.test_unit, "n_baseline": self.n_baseline,
                "n_candidate": self.n_candidate, "threshold": self.threshold, "verdict": self.verdict,
                "status": self.status, "reason": self.reason}


@dataclass
class Result:
    baseline: str
    candidate: str
    rows: list[Row]
    warnings: list[str]
    options: Options

    @property
    def regressions(self) -> int:
        return sum(r.verdict == "regression" for r in self.rows)

    @property
    def inconclusive(self) -> int:
        return sum(r.verdict == "inconclusive" for r in self.rows)

    @property
    def not_ok(self) -> list[Row]:
        """Case rows: baseline cases missing, failed or skipped in the candidate."""
        return [r for r in self.rows if r.status != "ok"]

    @property
    def tested(self) -> int:
        return sum(r.p_value is not None for r in self.rows)

    @property
    def exit_code(self) -> int:
        """3 on any regression, else 4 on any inconclusive change past the threshold, else 0."""
        return EXIT_REGRESSION if self.regressions else EXIT_INCONCLUSIVE if self.inconclusive else EXIT_OK

    def counts(self) -> dict[str, int]:
        return {v: sum(r.verdict == v for r in self.rows) for v in VERDICTS}


def parse_fraction(text: str, what: str = "--threshold") -> float:
    """'5%' -> 0.05; '0.05' -> 0.05; '5' -> 0.05 (a bare number >= 1 is read as percent)."""
    s = str(text).strip()
    try:
        v = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise InputError(f"{what} must look like 5% or 0.05, got {text!r}") from None
    if not s.endswith("%") and v >= 1:
        v /= 100
    if not 0 <= v < 10 or math.isnan(v):
        raise InputError(f"{what} must be a percentage between 0% and 1000%, got {text!r}")
    return v


def parse_fail_on(text: str | None) -> dict[str, float]:
    """'decode_tok_s:3%,rss_peak_bytes:10%' -> {'decode_tok_s': 0.03, 'rss_peak_bytes': 0.10}."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, thr = part.partition(":")
        if not sep:
            raise InputError(f"--fail-on takes METRIC:THRESHOLD pairs like decode_tok_s:3%, got {part!r}")
        out[metric_spec(name.strip()).name] = parse_fraction(thr, f"--fail-on {name}")
    return out


def metric_spec(name: str) -> MetricSpec:
    if name in METRIC_SPECS:
        return METRIC_SPECS[name]
    raise InputError(f"unknown metric {name!r}; metrics: {', '.join(METRIC_SPECS)}")


def check_match(fields: str | None) -> tuple[str, ...]:
    out = tuple(f.strip() for f in (fields or "").split(",") if f.strip())
    for f in out:
        if f not in KEY_FIELDS or f == "device":
            allowed = ", ".join(k for k in KEY_FIELDS if k != "device")
            raise InputError(f"--match takes case key fields ({allowed}); use --force for devices, got {f!r}")
    return out


# -- verdicts -----------------------------------------------------------------------------------
def _verdict(better: float, threshold: float, significant: bool, conclusive: bool = True) -> str:
    """``better``: the relative change signed so that > 0 is an improvement; ``conclusive``: the
    test could have shown a change of this kind (module docstring)."""
    if abs(better) <= threshold:
        return "ok"
    if not significant:
        return "insignificant" if conclusive else "inconclusive"
    return "improved" if better > 0 else "regression"


def _finish(rows: list[Row], alpha: float) -> None:
    """Benjamini-Hochberg over the tested rows, then each metric row's verdict."""
    tested = [r for r in rows if r.p_value is not None]
    for r, q in zip(tested, benjamini_hochberg([r.p_value for r in tested])):
        r.p_adjusted = q
    for r in rows:
        if r.status != "ok":
            continue
        if r.test == "exact":
            significant = r.ratio != 1.0
        elif r.p_adjusted is None:
            significant = False
        else:
            significant = r.p_adjusted < alpha and not (r.ci_low <= 1.0 <= r.ci_high)
        better = r.change if METRIC_SPECS[r.metric].higher_is_better else -r.change
        conclusive = r.reachable and not (better < 0 and r.intermittent)
        r.verdict = _verdict(better, r.threshold, significant, conclusive)


# -- joining ------------------------------------------------------------------------------------
def _key_fields(opts: Options) -> tuple[str, ...]:
    drop = set(opts.match) | ({"device"} if opts.force else set())
    return tuple(k for k in KEY_FIELDS if k not in drop)


def _index(side: Side, fields: tuple[str, ...], warnings: list[str], rows=None) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for row in side.rows if rows is None else rows:
        k = tuple(norm_key(row.get(f)) for f in fields)
        if k in out:
            warnings.append(f"{side.name}: case {row.get('case_id')} repeats the key of case "
                            f"{out[k].get('case_id')}; only the first is compared")
            continue
        out[k] = row
    return out


def _no_match_message(base: Side, cand: Side, fields: tuple[str, ...]) -> str:
    differing = []
    for f in fields:
        bv = {norm_key(r.get(f)) for r in base.rows}
        cv = {norm_key(r.get(f)) for r in cand.rows}
        if not bv & cv:
            differing.append(f"{f} ({', '.join(sorted(bv))[:60]} vs {', '.join(sorted(cv))[:60]})")
    hint = " differing: " + "; ".join(differing) if differing else ""
    more = " (use --match model to compare two different models)" if any(d.startswith("model ") for d in differing) else ""
    return f"no case of {base.name} matches a case of {cand.name} on the case key.{hint}{more}"


def _label(key: dict[str, str], varying: set[str], bmodel: str, cmodel: str) -> str:
    model = bmodel if bmodel == cmodel else f"{bmodel} -> {cmodel}"
    return case_label({**key, "model": model}, {"model", "quant"} | varying)


_MORE_UNITS = {"rep": "measure with -r 5 or more", "process": "run with --processes 5 or more (or -r auto, which adds "
               "processes until the interval over them is within --target-ci)"}


def _unit_warnings(rows: list[Row], few: set[tuple[int, int, str]], alpha: float) -> list[str]:
    """What the units of the tests were where they were not reps, and where too few of them could
    not show any change."""
    out = []
    for nb, nc, unit in sorted(few):
        what = "reps" if unit == "rep" else "processes" if unit == "process" else f"units ({unit})"
        out.append(f"with {nb} vs {nc} {what} the smallest p a Mann-Whitney test can give is "
                   f"{min_mannwhitney_p(nb, nc):.2f} >= alpha {alpha:g}: no change can be shown to be "
                   f"significant; {_MORE_UNITS.get(unit, 'run both sides with --processes 5 or more')}")
    by_process = sorted({r.label for r in rows if r.test_unit == "process"})
    if by_process:
        out.append(f"{len(by_process)} case(s) ran in several worker processes on both sides: their timing metrics "
                   f"are tested with the process as the unit (each process's center over its reps is one value, "
                   f"n counts processes: reps within one process are not independent)")
    for unit in sorted({r.test_unit for r in rows} - {"rep", "process"}):
        cases = sorted({r.label for r in rows if r.test_unit == unit})
        side = "baseline" if unit.startswith("process") else "candidate"
        out.append(f"{len(cases)} case(s) ran in several worker processes in the {side} only: its processes and "
                   f"the other side's reps are the units ({unit}), so the units differ and one process's reps do "
                   f"not show the spread between processes (a change can look more significant than it is); "
                   f"run both sides with --processes: {'; '.join(cases)[:200]}")
    return out


def compare(baseline: str, candidate: str, store: str | Path = "reports", opts: Options | None = None) -> Result:
    """Compare two sides (run ids in ``store``, run folders or CSV files). Raises InputError for
    unknown inputs, different devices (unless ``opts.force``) and when no case matches."""
    opts = opts or Options()
    base, cand = load_side(baseline, store), load_side(candidate, store)
    if not base.rows:
        raise InputError(f"{base.name} has no successful case to compare")
    warnings = [f"{side.name} was measured with --no-verify on a machine that is not its device profile"
                for side in (base, cand) if any(r.get("device_verified") is False for r in side.rows)]
    bdev, cdev = base.devices(), cand.devices()
    if bdev != cdev and not opts.force:
        raise InputError(f"{base.name} ran on {', '.join(sorted(bdev))} but {cand.name} on "
                         f"{', '.join(sorted(cdev))}: results from different devices are not comparable "
                         f"(use --force to compare anyway)")
    fields = _key_fields(opts)
    bidx, cidx = _index(base, fields, warnings), _index(cand, fields, warnings)
    cbad = _index(cand, fields, [], cand.not_ok)
    common = [k for k in bidx if k in cidx]
    lost = {k: _not_ok_match(k, cbad) for k in bidx if k not in cidx}
    if not common and not any(lost.values()):
        raise InputError(_no_match_message(base, cand, fields))
    extra = len(cidx) - len(common)
    if extra:
        warnings.append(f"{extra} case(s) of {cand.name} have no match on the other side and are not compared")
    if lost:
        warnings.append(f"{len(lost)} case(s) of {base.name} did not succeed in {cand.name} (missing, failed or "
                        f"skipped): " + ("allowed by --allow-missing" if opts.allow_missing else
                                         "each is a regression (--allow-missing accepts them)"))
    varying = {f for i, f in enumerate(fields) if len({k[i] for k in list(bidx)}) > 1}
    names = opts.metrics or tuple(dict.fromkeys(DEFAULT_METRICS + tuple(opts.fail_on)))
    specs = [metric_spec(m) for m in names]
    rows: list[Row] = []
    few_units: set[tuple[int, int, str]] = set()
    for k in bidx:
        brow, crow = bidx[k], cidx.get(k)
        key = dict(zip(fields, k))
        if crow is None:
            bad = lost[k] or {}
            label = _label(key, varying, str(brow.get("model")), str(bad.get("model") or brow.get("model")))
            st = status(bad) if bad else "missing"
            reason = str(bad.get("error") or "") if bad else f"no such case in {cand.name}"
            rows.append(Row(key, label, "case", "", None, None, None, None, None, None, None, "none",
                            int(num(brow.get("reps")) or 0), 0, 0.0,
                            "missing" if opts.allow_missing else "regression", st, reason))
            continue
        label = _label(key, varying, str(brow.get("model")), str(crow.get("model")))
        bvals, cvals = base.values(brow), cand.values(crow)
        for spec in specs:
            row = _compare_metric(spec, key, label, brow, crow, bvals, cvals, opts, few_units)
            if row is not None:
                rows.append(row)
    warnings += _unit_warnings(rows, few_units, opts.alpha)
    if common and not any(r.status == "ok" for r in rows):
        raise InputError(f"no metric to compare: none of {', '.join(names)} is present on both sides")
    _finish(rows, opts.alpha)
    return Result(base.name, cand.name, rows, warnings, opts)


def _not_ok_match(key: tuple, bad: dict[tuple, dict]) -> dict | None:
    """The candidate's row of a case that did not succeed, on the full key, or else on the key fields
    that row has (a case that failed before its model loaded may lack the model's quant)."""
    if key in bad:
        return bad[key]
    for k, row in bad.items():
        if all(b == "" or a == b for a, b in zip(key, k)):
            return row
    return None


def _compare_metric(spec: MetricSpec, key, label, brow, crow, bvals, cvals, opts: Options,
                    few_units: set) -> Row | None:
    """One metric of one matched case (``bvals``/``cvals``: each side's per-rep and per-process values)."""
    thr = opts.fail_on.get(spec.name, opts.threshold)
    (b, bproc), (c, cproc) = (bvals[0].get(spec.name), bvals[1]), (cvals[0].get(spec.name), cvals[1])
    unit = "rep"
    if b is not None and c is not None and b.size and c.size:
        if per_rep.center(spec.name, b) == 0:
            return None
        bu, cu, unit = units(spec.name, b, c, bproc, cproc)
        p, lo, hi, test = test_units(spec.name, spec.exact, bu, cu, opts.alpha)
        reachable = test == "exact" or (test != "none" and min_mannwhitney_p(bu.size, cu.size) < opts.alpha)
        if test in ("mannwhitney", "permutation") and not reachable:
            few_units.add((bu.size, cu.size, unit))
        intermittent_ = test in ("mannwhitney", "permutation") and intermittent(spec.higher_is_better, bu, cu, thr)
        # the columns are the per-rep centers, the summary's numbers; n counts the test's units
        bm, cm = float(per_rep.center(spec.name, b)), float(per_rep.center(spec.name, c))
        nb, nc = bu.size, cu.size
    else:  # summary rows only (no raw samples on one side)
        bm, cm = num(brow.get(spec.name)), num(crow.get(spec.name))
        if bm is None or cm is None or bm == 0:
            return None
        nb, nc = int(num(brow.get("reps")) or 0), int(num(crow.get("reps")) or 0)
        bs, cs = num(brow.get(f"{spec.name}_std")), num(crow.get(f"{spec.name}_std"))
        if spec.exact:
            p, lo, hi, test = None, cm / bm, cm / bm, "exact"
        else:
            p, lo, hi, test = test_from_summary((bm, bs, nb), (cm, cs, nc), opts.alpha)
        reachable, intermittent_ = test != "none", False
    ratio = cm / bm
    # the verdict needs the whole table's p-values (false discovery rate): _finish sets it
    return Row(key, label, spec.name, spec.unit, bm, cm, ratio, ratio - 1, lo, hi, p, test, nb, nc, thr,
               "", test_unit=unit, reachable=reachable, intermittent=intermittent_)
