"""Regression verdicts between two sets of results (a CI gate, or a new model release vs the old).

Each side is a run id in a store, a run folder (run.json + samples.csv, or summary.csv), or a
summary/samples CSV file, loaded by edgebench.compare_sides. Cases are joined on
``records.KEY_FIELDS``; each metric (records.FIELDS, compared) has a direction and a center rule
(mean, median or max over reps). The baseline and candidate columns are each side's center of the
per-rep values (edgebench.analysis.per_rep: the very numbers the summary shows), the ratio is
theirs. A change is a *regression* only when it is worse than its threshold AND statistically
significant on the raw per-rep values: a two-sided Mann-Whitney U test (p < alpha) whose verdict a
bootstrap confidence interval of the ratio of centers agrees with (the interval excludes 1).
Deterministic metrics (buffer sizes) have no noise, so any change past the threshold is real.

Never runs a model and never imports a backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgebench.analysis import per_rep
from edgebench.analysis.sides import Side, load_side, norm_key, num
from edgebench.errors import InputError
from edgebench.records import FIELDS, KEY_FIELDS, case_label

VERDICTS = ("regression", "improved", "insignificant", "ok")
BOOTSTRAP_N = 2000
BOOTSTRAP_SEED = 0  # fixed: the same inputs give the same table (CI logs must be reproducible)


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


@dataclass
class Row:
    key: dict[str, str]
    label: str
    metric: str
    unit: str
    baseline: float
    candidate: float
    ratio: float  # candidate / baseline
    change: float  # candidate / baseline - 1 (fraction); the metric's direction says if that is better
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    test: str  # mannwhitney | welch | exact | none
    n_baseline: int
    n_candidate: int
    threshold: float
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {**{f"key_{k}": v for k, v in self.key.items()}, "case": self.label, "metric": self.metric,
                "unit": self.unit, "baseline": self.baseline, "candidate": self.candidate, "ratio": self.ratio,
                "change": self.change, "ci_low": self.ci_low, "ci_high": self.ci_high, "p_value": self.p_value,
                "test": self.test, "n_baseline": self.n_baseline, "n_candidate": self.n_candidate,
                "threshold": self.threshold, "verdict": self.verdict}


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


# -- statistics ---------------------------------------------------------------------------------
def min_mannwhitney_p(n1: int, n2: int) -> float:
    """The smallest two-sided p an exact Mann-Whitney U test can give with n1 and n2 values."""
    return min(1.0, 2.0 / math.comb(n1 + n2, n1)) if n1 and n2 else 1.0


def bootstrap_ratio_ci(base: np.ndarray, cand: np.ndarray, alpha: float, metric: str) -> tuple[float, float]:
    """Percentile bootstrap CI of center(cand) / center(base) (``metric``'s center rule),
    resampling reps on each side."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    b = per_rep.center(metric, base[rng.integers(0, base.size, (BOOTSTRAP_N, base.size))], axis=1)
    c = per_rep.center(metric, cand[rng.integers(0, cand.size, (BOOTSTRAP_N, cand.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = c / b
    lo, hi = np.nanpercentile(ratios, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def _test(spec: MetricSpec, base: np.ndarray, cand: np.ndarray, alpha: float):
    """(p, ci_low, ci_high, test name, significant) for one metric of one case."""
    from scipy import stats as st

    bc, cc = per_rep.center(spec.name, base), per_rep.center(spec.name, cand)
    ratio = cc / bc
    constant = np.ptp(base) == 0 and np.ptp(cand) == 0
    if spec.exact or constant:
        # No noise on either side: the change is exactly what was measured.
        return None, ratio, ratio, "exact", bool(bc != cc)
    if base.size < 2 or cand.size < 2:
        return None, None, None, "none", False
    p = float(st.mannwhitneyu(base, cand, alternative="two-sided").pvalue)
    lo, hi = bootstrap_ratio_ci(base, cand, alpha, spec.name)
    return p, lo, hi, "mannwhitney", p < alpha and not (lo <= 1.0 <= hi)


def _test_from_summary(base: tuple, cand: tuple, alpha: float):
    """Welch's t-test and a delta-method CI from (center, std, n) when no raw samples exist (the
    summary's center stands in for the mean: for mean-centered metrics, the ones with a std column,
    it is the mean)."""
    from scipy import stats as st

    (mb, sb, nb), (mc, sc, nc) = base, cand
    if sb is None or sc is None or nb < 2 or nc < 2:
        return None, None, None, "none", False
    if sb == 0 and sc == 0:
        return None, mc / mb, mc / mb, "exact", bool(mb != mc)
    p = float(st.ttest_ind_from_stats(mc, sc, nc, mb, sb, nb, equal_var=False).pvalue)
    r = mc / mb
    se = r * math.sqrt((sc ** 2 / nc) / mc ** 2 + (sb ** 2 / nb) / mb ** 2)
    z = float(st.norm.ppf(1 - alpha / 2))
    lo, hi = r - z * se, r + z * se
    return p, lo, hi, "welch", p < alpha and not (lo <= 1.0 <= hi)


def _verdict(better: float, threshold: float, significant: bool) -> str:
    """``better``: the relative change signed so that > 0 is an improvement."""
    if abs(better) <= threshold:
        return "ok"
    if not significant:
        return "insignificant"
    return "improved" if better > 0 else "regression"


# -- joining ------------------------------------------------------------------------------------
def _key_fields(opts: Options) -> tuple[str, ...]:
    drop = set(opts.match) | ({"device"} if opts.force else set())
    return tuple(k for k in KEY_FIELDS if k not in drop)


def _index(side: Side, fields: tuple[str, ...], warnings: list[str]) -> dict[tuple, dict]:
    out: dict[tuple, dict] = {}
    for row in side.rows:
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


def _rep_values(side: Side, row: dict[str, Any]) -> dict[str, np.ndarray]:
    return per_rep.rep_values(side.case_samples(row), num(row.get("n_prompt")) or 0, num(row.get("n_gen")) or 0)


def compare(baseline: str, candidate: str, store: str | Path = "reports", opts: Options | None = None) -> Result:
    """Compare two sides (run ids in ``store``, run folders or CSV files). Raises InputError for
    unknown inputs, different devices (unless ``opts.force``) and when no case matches."""
    opts = opts or Options()
    base, cand = load_side(baseline, store), load_side(candidate, store)
    warnings: list[str] = []
    bdev, cdev = base.devices(), cand.devices()
    if bdev != cdev and not opts.force:
        raise InputError(f"{base.name} ran on {', '.join(sorted(bdev))} but {cand.name} on "
                         f"{', '.join(sorted(cdev))}: results from different devices are not comparable "
                         f"(use --force to compare anyway)")
    fields = _key_fields(opts)
    bidx, cidx = _index(base, fields, warnings), _index(cand, fields, warnings)
    common = [k for k in bidx if k in cidx]
    if not common:
        raise InputError(_no_match_message(base, cand, fields))
    for side, idx in ((base, bidx), (cand, cidx)):
        missing = len(idx) - len(common)
        if missing:
            warnings.append(f"{missing} case(s) of {side.name} have no match on the other side and are not compared")
    varying = {f for i, f in enumerate(fields) if len({k[i] for k in common}) > 1}
    names = opts.metrics or tuple(dict.fromkeys(DEFAULT_METRICS + tuple(opts.fail_on)))
    specs = [metric_spec(m) for m in names]
    rows: list[Row] = []
    few_reps: set[tuple[int, int]] = set()
    for k in common:
        brow, crow = bidx[k], cidx[k]
        key = dict(zip(fields, k))
        label = _label(key, varying, str(brow.get("model")), str(crow.get("model")))
        bvals, cvals = _rep_values(base, brow), _rep_values(cand, crow)
        for spec in specs:
            row = _compare_metric(spec, key, label, brow, crow, bvals, cvals, opts, few_reps)
            if row is not None:
                rows.append(row)
    for nb, nc in sorted(few_reps):
        warnings.append(f"with {nb} vs {nc} reps the smallest p a Mann-Whitney test can give is "
                        f"{min_mannwhitney_p(nb, nc):.2f} >= alpha {opts.alpha:g}: no change can be shown to be "
                        f"significant; measure with -r 5 or more")
    if not rows:
        raise InputError(f"no metric to compare: none of {', '.join(names)} is present on both sides")
    return Result(base.name, cand.name, rows, warnings, opts)


def _compare_metric(spec: MetricSpec, key, label, brow, crow, bvals, cvals, opts: Options,
                    few_reps: set) -> Row | None:
    thr = opts.fail_on.get(spec.name, opts.threshold)
    b, c = bvals.get(spec.name), cvals.get(spec.name)
    if b is not None and c is not None and b.size and c.size:
        if per_rep.center(spec.name, b) == 0:
            return None
        p, lo, hi, test, significant = _test(spec, b, c, opts.alpha)
        if test == "mannwhitney" and min_mannwhitney_p(b.size, c.size) >= opts.alpha:
            few_reps.add((b.size, c.size))
        bm, cm = float(per_rep.center(spec.name, b)), float(per_rep.center(spec.name, c))
        nb, nc = b.size, c.size
    else:  # summary rows only (no raw samples on one side)
        bm, cm = num(brow.get(spec.name)), num(crow.get(spec.name))
        if bm is None or cm is None or bm == 0:
            return None
        nb, nc = int(num(brow.get("reps")) or 0), int(num(crow.get("reps")) or 0)
        bs, cs = num(brow.get(f"{spec.name}_std")), num(crow.get(f"{spec.name}_std"))
        if spec.exact:
            p, lo, hi, test, significant = None, cm / bm, cm / bm, "exact", bm != cm
        else:
            p, lo, hi, test, significant = _test_from_summary((bm, bs, nb), (cm, cs, nc), opts.alpha)
    ratio = cm / bm
    better = (ratio - 1) if spec.higher_is_better else (1 - ratio)
    return Row(key, label, spec.name, spec.unit, bm, cm, ratio, ratio - 1, lo, hi, p, test, nb, nc, thr,
               _verdict(better, thr, significant))
