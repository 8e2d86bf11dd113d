"""The significance tests of edgebench.analysis.compare: Mann-Whitney's smallest p, the bootstrap by
rep of a ratio of centers, the exact permutation test on whole reps, Benjamini-Hochberg, and Welch's
test from summary statistics. Pure functions, no I/O.
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
    resampling reps on each side."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    b = per_rep.center(metric, base[rng.integers(0, base.size, (BOOTSTRAP_N, base.size))], axis=1)
    c = per_rep.center(metric, cand[rng.integers(0, cand.size, (BOOTSTRAP_N, cand.size))], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = c / b
    lo, hi = np.nanpercentile(ratios, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def permutation_p(base: np.ndarray, cand: np.ndarray) -> float:
    """Two-sided p of a permutation test that moves whole reps between the sides (exact over all
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
