"""Output quality of a level against a reference level on the same tokens (pure numpy, no I/O).

Follows llama.cpp's llama-perplexity (tools/perplexity/perplexity.cpp, kl_divergence and its final
statistics) so the numbers can be compared with it:

- per scored token: KL(ref || candidate) in nats, delta_p = p_cand(target) - p_ref(target), whether
  the two argmaxes agree, nll = -log p_cand(target) and nll_ref = -log p_ref(target);
- mean +- uncertainty of a sum with llama's ``mean_and_uncertainty``: mean f = sum/n and
  sqrt((sum2/n - f^2) / (n - 1)) (0 for n <= 10); PPL = exp(mean nll) +- PPL * that uncertainty;
  ln(PPL/PPL_ref) with the covariance of the two nll means taken out of its uncertainty; RMS delta_p
  = sqrt(mean delta_p^2); same-top p with the binomial error sqrt(p (1 - p) / (n - 1));
  percentiles by linear interpolation; every sum in float64.

The reference is kept compactly (RefChunk): per token its K most likely ids with their log-probs
and the log of the mass outside them. KL is then computed over those K ids plus one lumped "rest"
bin (the candidate's rest mass = 1 - its mass on the K ids), which by the log-sum inequality is a
lower bound of the full-vocabulary KL, exact when K = V. K was chosen by measurement on the real
SmolLM2-135M (49,152-token vocabulary; benchmarks/quality_crosscheck.py --topk-error, numbers in
benchmarks/README.md). A small model spreads real mass over thousands of tokens and quantization
moves that tail, so a short top-K misses much of the KL: a mean absolute error of the per-token KL
below 1e-4 nats needs K = 16384 (1.7e-5 for Q4_K_M, 9.3e-5 for Q2_K), and then the reference is
128 KiB per token, more than llama-perplexity's 96. DEFAULT_TOP_K = 4096 keeps the mean KLD within
0.5% (0.42% and 0.35% low; absolute 2.5e-4 and 1.4e-3) at 32 KiB per token, a third of
llama-perplexity's; `--quality-top-k 16384` buys the 1e-4 bound where the space is there.

llama-perplexity differs in two small ways that stay well inside the cross-check's targets: it
stores the reference's log-probs as 16-bit integers over a 16-nat range and drops reference
probabilities below e^-16 from the KL sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_TOP_K = 4096
QUALITY_PHASE = "quality"
TOKEN_METRICS = ("kld", "delta_p", "same_top", "nll", "nll_ref")  # the per-token samples (records.METRICS)
SUMMARY_KEYS = ("kld_mean", "kld_mean_err", "kld_median", "kld_p90", "kld_p99", "kld_max", "delta_p_mean",
                "delta_p_rms", "same_top_p", "same_top_p_err", "ppl", "ppl_err", "ppl_ref", "ppl_ratio",
                "ppl_ratio_err", "quality_tokens")
SYNTHETIC_NOTE = "random weights: quality not meaningful"


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of (n, V) logits of any float type, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    if x.ndim != 2 or not x.shape[1]:
        raise ValueError(f"logits must be (n, V) with V >= 1, got shape {x.shape}")
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _logsumexp(x: np.ndarray) -> np.ndarray:
    """Row-wise log(sum(exp(x))) of float64 (n, m); -inf for rows that are all -inf."""
    m = x.max(axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return (np.log(np.exp(x - m).sum(axis=1, keepdims=True)) + m)[:, 0]


@dataclass(frozen=True)
class RefChunk:
    """The compact reference for n scored positions."""

    top_ids: np.ndarray  # (n, K) int32, the reference's K most likely next tokens, most likely first
    top_logp: np.ndarray  # (n, K) float32 their log-probs
    rest_logp: np.ndarray  # (n,) float64 log of the probability mass outside the top K (-inf if none)
    target_logp: np.ndarray  # (n,) float64 the reference's log-prob of the actual next token

    def __post_init__(self) -> None:
        n = self.top_ids.shape[0] if self.top_ids.ndim == 2 else -1
        if n < 0 or self.top_logp.shape != self.top_ids.shape or self.rest_logp.shape != (n,) \
                or self.target_logp.shape != (n,):
            raise ValueError(f"RefChunk shapes disagree: top_ids {self.top_ids.shape}, top_logp "
                             f"{self.top_logp.shape}, rest_logp {self.rest_logp.shape}, target_logp "
                             f"{self.target_logp.shape}")

    @property
    def n(self) -> int:
        return int(self.top_ids.shape[0])

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[1])


def _check_targets(logp: np.ndarray, targets: np.ndarray) -> np.ndarray:
    t = np.asarray(targets, dtype=np.int64)
    if t.shape != (logp.shape[0],):
        raise ValueError(f"targets must be ({logp.shape[0]},) for {logp.shape[0]} positions, got {t.shape}")
    if t.size and (t.min() < 0 or t.max() >= logp.shape[1]):
        raise ValueError(f"target ids must be in [0, {logp.shape[1]}), got {t.min()}..{t.max()}")
    return t


def _top_k(logp: np.ndarray, k: int) -> np.ndarray:
    """(n, k) ids of the k largest entries per row, largest first; ties broken by the lower id (as
    argmax breaks them)."""
    v = logp.shape[1]
    if k >= v:
        part = np.broadcast_to(np.arange(v), logp.shape)
    else:
        part = np.argpartition(-logp, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(logp, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


def _rest_logp(logp: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """log of the mass outside ``ids`` per row, summed directly over the other entries (no
    1 - sum cancellation); -inf when ``ids`` cover the row."""
    masked = logp.copy()
    np.put_along_axis(masked, ids, -np.inf, axis=1)
    return _logsumexp(masked)


def compress(logits: np.ndarray, targets: np.ndarray, k: int) -> RefChunk:
    """The compact reference of (n, V) reference logits whose next tokens are ``targets``: the top
    ``k`` (at most V) log-probs, the rest mass and the targets' log-probs."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    logp = log_softmax(logits)
    t = _check_targets(logp, targets)
    ids = _top_k(logp, min(k, logp.shape[1]))
    rows = np.arange(logp.shape[0])
    return RefChunk(ids.astype(np.int32), np.take_along_axis(logp, ids, axis=1).astype(np.float32),
                    _rest_logp(logp, ids), logp[rows, t])


def concat(chunks: list[RefChunk]) -> RefChunk:
    """One RefChunk of several, in order (they must have the same K)."""
    if not chunks:
        raise ValueError("concat needs at least one chunk")
    ks = {c.k for c in chunks}
    if len(ks) > 1:
        raise ValueError(f"chunks have different K: {sorted(ks)}")
    return RefChunk(np.concatenate([c.top_ids for c in chunks]), np.concatenate([c.top_logp for c in chunks]),
                    np.concatenate([c.rest_logp for c in chunks]), np.concatenate([c.target_logp for c in chunks]))


@dataclass(frozen=True)
class TokenScores:
    """Per scored token, (n,) arrays."""

    kld: np.ndarray  # KL(ref || candidate), nats, from the top-K + rest-mass reference
    delta_p: np.ndarray  # p_candidate(target) - p_ref(target)
    same_top: np.ndarray  # bool: candidate's argmax == reference's argmax
    nll: np.ndarray  # -log p_candidate(target)
    nll_ref: np.ndarray  # -log p_ref(target)

    @property
    def n(self) -> int:
        return int(self.kld.shape[0])


def lumped_kl(p_logp: np.ndarray, p_rest: np.ndarray, q_logp: np.ndarray, q_rest: np.ndarray) -> np.ndarray:
    """KL over K bins plus one rest bin per row: sum p (log p - log q) in float64, a 0 * log 0 term
    counted as 0. Tiny negative values from the reference's float32 rounding are clipped to 0 (the
    KL of two distributions is never negative)."""
    p_logp = np.asarray(p_logp, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        top = np.where(np.isfinite(p_logp), np.exp(p_logp) * (p_logp - q_logp), 0.0).sum(axis=1)
        rest = np.where(np.isfinite(p_rest), np.exp(p_rest) * (p_rest - q_rest), 0.0)
    return np.maximum(top + rest, 0.0)


def score(ref: RefChunk, logits: np.ndarray, targets: np.ndarray) -> TokenScores:
    """Score the candidate's (n, V) logits on the positions ``ref`` was made from."""
    logp = log_softmax(logits)
    if logp.shape[0] != ref.n:
        raise ValueError(f"the candidate has {logp.shape[0]} positions but the reference {ref.n}")
    if ref.n and int(ref.top_ids.max()) >= logp.shape[1]:
        raise ValueError(f"the reference has token ids up to {int(ref.top_ids.max())} but the candidate's "
                         f"vocabulary has {logp.shape[1]}: another vocabulary")
    t = _check_targets(logp, targets)
    rows = np.arange(ref.n)
    ids = ref.top_ids.astype(np.int64)
    # the candidate's top log-probs at the reference's float32 precision: a level scored against
    # itself gets a KL of exactly 0 (the rounding moves any other KL by ~1e-7 of |log p|)
    q_top = np.take_along_axis(logp, ids, axis=1).astype(np.float32).astype(np.float64)
    kld = lumped_kl(ref.top_logp, ref.rest_logp, q_top, _rest_logp(logp, ids))
    lp_t = logp[rows, t]
    same = (np.argmax(logp, axis=1) == ids[:, 0]) if ref.k else np.zeros(ref.n, dtype=bool)
    return TokenScores(kld, np.exp(lp_t) - np.exp(ref.target_logp), same, -lp_t,
                       -np.asarray(ref.target_logp, dtype=np.float64))


def mean_and_uncertainty(x: np.ndarray) -> tuple[float, float]:
    """llama-perplexity's mean_and_uncertainty over values ``x`` (float64 sums)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n < 1:
        return 0.0, 0.0
    f = float(x.sum() / n)
    var = float((x * x).sum() / n - f * f)
    return f, (math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0)


def _covariance(a: np.ndarray, b: np.ndarray) -> float:
    """llama-perplexity's covariance of the means of a and b."""
    n = a.size
    if n < 10:
        return 0.0
    return float(((a * b).sum() / n - (a.sum() / n) * (b.sum() / n)) / (n - 1))


def summarize(scores: TokenScores) -> dict[str, float]:
    """Statistics of the scored tokens (SUMMARY_KEYS, plus ppl_ref_err and delta_p_rms_err)."""
    n = scores.n
    if not n:
        return {}
    kld = np.asarray(scores.kld, dtype=np.float64)
    nll, nll_ref = (np.asarray(a, dtype=np.float64) for a in (scores.nll, scores.nll_ref))
    dp = np.asarray(scores.delta_p, dtype=np.float64)
    kld_mean, kld_err = mean_and_uncertainty(kld)
    lp, lp_err = mean_and_uncertainty(nll)
    lb, lb_err = mean_and_uncertainty(nll_ref)
    cov = _covariance(nll, nll_ref)
    ratio_err = math.sqrt(max(lp_err ** 2 + lb_err ** 2 - 2 * cov, 0.0))
    mse, mse_err = mean_and_uncertainty(dp * dp)
    rms = math.sqrt(mse)
    same = float(np.count_nonzero(scores.same_top)) / n
    p90, p99 = np.percentile(kld, [90, 99])
    ppl, ppl_ref, ratio = math.exp(lp), math.exp(lb), math.exp(lp - lb)
    return {
        "kld_mean": kld_mean, "kld_mean_err": kld_err, "kld_median": float(np.median(kld)),
        "kld_p90": float(p90), "kld_p99": float(p99), "kld_max": float(kld.max()),
        "delta_p_mean": float(dp.sum() / n), "delta_p_rms": rms,
        "same_top_p": same, "same_top_p_err": math.sqrt(same * (1 - same) / (n - 1)) if n > 1 else 0.0,
        "ppl": ppl, "ppl_err": ppl * lp_err, "ppl_ref": ppl_ref, "ppl_ratio": ratio,
        "ppl_ratio_err": ratio * ratio_err, "quality_tokens": float(n),
        "ppl_ref_err": ppl_ref * lb_err, "delta_p_rms_err": 0.5 / rms * mse_err if rms else 0.0,
    }


def scores_from_samples(s: pd.DataFrame) -> TokenScores | None:
    """TokenScores rebuilt from one case's stored samples (phase "quality", rep 0, idx = scored
    token index, one metric per TOKEN_METRICS), or None when the case has none."""
    q = s[(s["phase"] == QUALITY_PHASE) & s["metric"].isin(TOKEN_METRICS)]
    if not len(q) or not (q["metric"] == "kld").any():
        return None
    wide = q.pivot_table(index="idx", columns="metric", values="value", aggfunc="first").sort_index()
    wide = wide.dropna(subset=[m for m in TOKEN_METRICS if m in wide])
    cols = {m: wide[m].to_numpy(dtype=np.float64) if m in wide else np.full(len(wide), np.nan)
            for m in TOKEN_METRICS}
    return TokenScores(cols["kld"], cols["delta_p"], cols["same_top"] > 0.5, cols["nll"], cols["nll_ref"])


def summarize_samples(s: pd.DataFrame) -> dict[str, float]:
    """summarize() of one case's stored quality samples; {} when it has none."""
    scores = scores_from_samples(s)
    return summarize(scores) if scores is not None else {}


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def fastest_under(rows: list[dict[str, Any]], max_kld: float) -> dict[str, Any] | None:
    """The row with the highest decode tok/s among the ok rows whose kld_mean <= ``max_kld``
    (None when no row qualifies). Pass one device / backend / model group (fastest_by_group)."""
    best, best_speed = None, -math.inf
    for r in rows:
        kld, speed = _num(r.get("kld_mean")), _num(r.get("decode_tok_s"))
        if r.get("status", "ok") != "ok" or kld is None or speed is None or kld > max_kld:
            continue
        if speed > best_speed:
            best, best_speed = r, speed
    return best


GROUP_FIELDS = ("device", "backend", "model")


def fastest_by_group(rows: list[dict[str, Any]], max_kld: float) -> dict[tuple, dict[str, Any] | None]:
    """fastest_under() per (device, backend, model) group of the rows that have a kld_mean."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if _num(r.get("kld_mean")) is not None:
            groups.setdefault(tuple(str(r.get(f)) for f in GROUP_FIELDS), []).append(r)
    return {k: fastest_under(g, max_kld) for k, g in groups.items()}
