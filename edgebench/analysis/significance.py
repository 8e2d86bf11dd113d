"""The significance tests of edgebench.analysis.compare: Mann-Whitney's smallest p, the bootstrap by
unit of a ratio of centers, the exact permutation test on whole units, Benjamini-Hochberg, and Welch's
test from summary statistics. Pure functions, no I/O.

A unit is one independent value of a metric: a rep, or for a case run in several worker processes
(--processes) a process (its center over its reps: the reps of one process share its memory layout,
page cache and clock ramp, so they are not independent of each other).
"""

from __future__ import annotations

import math

import numpy as np

from edgebench.analysis import per_rep

BOOTSTRAP_N = 2000
PERMUTATIONS_MAX = 20000  # exact permutation test up to this many splits, else this many random ones
BOOTSTRAP_SEED = 0  # fixed: the same inputs give the same table (CI logs must be reproducible)


def min_mannwhitney_p(n1: int, n2: int) -> float:
    """The smallest two-sided p an exact Mann-Whitney U test can give with n1 and n2 values."""
    return min(1.0, 2.0 / math.comb(n1 + n2, n1)) if n1 and n2 else 1.0


def bootstrap_ratio_ci(base: np.ndarray, cand: np.ndarray, alpha: float, metric: str) -> tuple[float, float]:
    """Percentile bootstrap CI of center(cand) / center(base) (``metric``'s center rule),
    resampling units (reps or processes) on each side."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    b = per_rep.center(metric, base[rng.integers(0, base.size, (BOOTSTRAP_N, base.size))], axis=1)
    c = per_rep.center(metric, cand[rng.integers(0, cand.size, (BOOTSTRAP_N, cand.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = c / b
    lo, hi = np.nanpercentile(ratios, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def permutation_p(base: np.ndarray, cand: np.ndarray) -> float:
    """Two-sided p of a permutation test that moves whole units (reps, processes) between the sides (exact over all
    splits up to PERMUTATIONS_MAX, else that many seeded random ones); the statistic is the
    difference of the sides' mean log per-rep values (positive values: ms)."""
    import itertools

    v = np.log(np.concatenate([base, cand]))
    n, k = v.size, cand.size
    if math.comb(n, k) <= PERMUTATIONS_MAX:
        idx = np.array(list(itertools.combinations(range(n), k)))
    else:
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        idx = np.argsort(rng.random((PERMUTATIONS_MAX, n)), axis=1)[:, :k]
    in_cand = np.zeros((len(idx), n), dtype=bool)
    np.put_along_axis(in_cand, idx, True, axis=1)
    sc = (in_cand * v).sum(axis=1) / k
    sb = (~in_cand * v).sum(axis=1) / (n - k)
    obs = abs(np.log(cand).mean() - np.log(base).mean())
    return float(np.mean(np.abs(sc - sb) >= obs - 1e-12 * max(1.0, obs)))


def benjamini_hochberg(p: list[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (q-values), in the order given."""
    m = len(p)
    if not m:
        return []
    order = np.argsort(p)
    ranked = np.asarray(p, dtype=float)[order] * m / np.arange(1, m + 1)
    q = np.minimum(1.0, np.minimum.accumulate(ranked[::-1])[::-1])
    out = np.empty(m)
    out[order] = q
    return [float(x) for x in out]


def test_from_summary(base: tuple, cand: tuple, alpha: float):
    """Welch's t-test and a delta-method CI from (center, std, n) when no raw samples exist (the
    summary's center stands in for the mean: for mean-centered metrics, the ones with a std column,
    it is the mean). Returns (p, ci_low, ci_high, test name)."""
    from scipy import stats as st

    (mb, sb, nb), (mc, sc, nc) = base, cand
    if sb is None or sc is None or nb < 2 or nc < 2:
        return None, None, None, "none"
    if sb == 0 and sc == 0:
        return None, mc / mb, mc / mb, "exact"
    p = float(st.ttest_ind_from_stats(mc, sc, nc, mb, sb, nb, equal_var=False).pvalue)
    r = mc / mb
    se = r * math.sqrt((sc ** 2 / nc) / mc ** 2 + (sb ** 2 / nb) / mb ** 2)
    z = float(st.norm.ppf(1 - alpha / 2))
    lo, hi = r - z * se, r + z * se
    return p, lo, hi, "welch"


def test_units(metric: str, exact: bool, base: np.ndarray, cand: np.ndarray, alpha: float):
    """(p, ci_low, ci_high, test name) of one metric of one case from its per-unit values on each
    side (``metric``'s center rule); significance is decided over the whole table (compare._finish).
    TPOT percentiles (each unit's own statistic) get the permutation test on whole units, the rest
    Mann-Whitney; the interval is the bootstrap by unit of the ratio of centers."""
    from scipy import stats as st

    ratio = per_rep.center(metric, cand) / per_rep.center(metric, base)
    constant = base.size > 1 and cand.size > 1 and np.ptp(base) == 0 and np.ptp(cand) == 0
    if exact or constant:
        # No noise on either side: the change is exactly what was measured.
        return None, ratio, ratio, "exact"
    if base.size < 2 or cand.size < 2:
        return None, None, None, "none"
    if metric.startswith("tpot_ms_p") and base.min() > 0 and cand.min() > 0:
        p, test = permutation_p(base, cand), "permutation"
    else:
        p, test = float(st.mannwhitneyu(base, cand, alternative="two-sided").pvalue), "mannwhitney"
    lo, hi = bootstrap_ratio_ci(base, cand, alpha, metric)
    return p, lo, hi, test


def intermittent(higher_is_better: bool, base: np.ndarray, cand: np.ndarray, threshold: float) -> bool:
    """Some candidate units are worse than every baseline unit by more than the threshold (an
    intermittent slowdown that more units would prove or disprove)."""
    if higher_is_better:
        return bool((cand < base.min() * (1 - threshold)).any())
    return bool((cand > base.max() * (1 + threshold)).any())
