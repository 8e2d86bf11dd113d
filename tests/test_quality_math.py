"""The quality math (edgebench.analysis.quality) against a brute-force full-vocabulary computation
on small hand-made and random logits; no model needed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from edgebench.analysis import quality as q


def _brute(ref_logits, cand_logits, targets):
    """Full-vocabulary KL, nll, delta-p and same-top, written out the slow way."""
    out = []
    for r, c, t in zip(ref_logits.astype(np.float64), cand_logits.astype(np.float64), targets):
        p = np.exp(r - r.max())
        p /= p.sum()
        qq = np.exp(c - c.max())
        qq /= qq.sum()
        kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, qq) if pi > 0)
        out.append((kl, -math.log(qq[t]), -math.log(p[t]), qq[t] - p[t], int(np.argmax(r)) == int(np.argmax(c))))
    return [np.array(x) for x in zip(*out)]


def _random(n=40, v=64, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.normal(0, 3, (n, v)).astype(np.float32)
    cand = (ref + rng.normal(0, noise, (n, v))).astype(np.float32)
    targets = rng.integers(0, v, n)
    return ref, cand, targets


def test_log_softmax_normalizes_in_float64():
    x = np.array([[1000.0, 1000.0, -1000.0], [0.0, 1.0, 2.0]], dtype=np.float32)
    lp = q.log_softmax(x)
    assert lp.dtype == np.float64
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(lp[0, :2], math.log(0.5))
    with pytest.raises(ValueError):
        q.log_softmax(np.zeros(3))


def test_compress_keeps_top_k_most_likely_first_and_the_rest_mass():
    logits = np.array([[0.0, 3.0, 1.0, 2.0, 3.0]])
    ref = q.compress(logits, np.array([2]), k=3)
    assert ref.top_ids.dtype == np.int32 and ref.top_logp.dtype == np.float32
    assert ref.top_ids.tolist() == [[1, 4, 3]]  # a tie keeps the lower id first, as argmax does
    lp = q.log_softmax(logits)[0]
    np.testing.assert_allclose(ref.rest_logp, [np.log(np.exp(lp[[0, 2]]).sum())])
    np.testing.assert_allclose(ref.target_logp, [lp[2]])
    full = q.compress(logits, np.array([2]), k=99)  # K capped at V: nothing outside, rest -inf
    assert full.k == 5 and np.isneginf(full.rest_logp).all()


def test_k_equal_v_is_exact_against_brute_force():
    ref, cand, t = _random()
    kl, nll, nll_ref, dp, same = _brute(ref, cand, t)
    s = q.score(q.compress(ref, t, k=ref.shape[1]), cand, t)
    np.testing.assert_allclose(s.kld, kl, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(s.nll, nll, rtol=1e-12)
    np.testing.assert_allclose(s.nll_ref, nll_ref, rtol=1e-12)
    np.testing.assert_allclose(s.delta_p, dp, atol=1e-12)
    assert s.same_top.tolist() == same.tolist()


@pytest.mark.parametrize("k", [1, 2, 8, 32, 63])
def test_top_k_kl_is_a_lower_bound_that_tightens_with_k(k):
    ref, cand, t = _random(noise=1.0, seed=k)
    exact = _brute(ref, cand, t)[0]
    approx = q.score(q.compress(ref, t, k), cand, t).kld
    assert (approx <= exact + 1e-6).all()
    assert (approx >= 0).all()
    bigger = q.score(q.compress(ref, t, min(2 * k, 64)), cand, t).kld
    assert (bigger >= approx - 1e-6).all()


def test_peaked_distributions_need_few_ids():
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, (50, 200)) * 6  # peaked: most mass in a handful of ids
    cand = ref + rng.normal(0, 0.3, ref.shape)
    t = rng.integers(0, 200, 50)
    exact = _brute(ref, cand, t)[0]
    err = np.abs(exact - q.score(q.compress(ref, t, 32), cand, t).kld)
    assert err.mean() < 0.01 * exact.mean()


def test_self_comparison_is_zero_kld_and_full_agreement():
    ref, _, t = _random()
    s = q.score(q.compress(ref, t, 16), ref, t)
    assert (s.kld == 0).all()
    assert s.same_top.all()
    np.testing.assert_allclose(s.nll, s.nll_ref, rtol=1e-12)
    m = q.summarize(s)
    assert m["same_top_p"] == 1.0 and m["same_top_p_err"] == 0.0
    assert m["ppl_ratio"] == pytest.approx(1.0, abs=1e-12)


def test_same_top_detects_a_changed_argmax():
    ref = np.array([[5.0, 1.0, 0.0], [0.0, 5.0, 1.0]])
    cand = np.array([[5.0, 1.0, 0.0], [0.0, 1.0, 5.0]])
    s = q.score(q.compress(ref, np.array([0, 1]), 2), cand, np.array([0, 1]))
    assert s.same_top.tolist() == [True, False]


def test_summarize_follows_llama_perplexity_formulas():
    ref, cand, t = _random(n=200, v=32, noise=0.8)
    s = q.score(q.compress(ref, t, 32), cand, t)
    m = q.summarize(s)
    assert set(q.SUMMARY_KEYS) <= set(m)
    n = 200
    assert m["quality_tokens"] == n
    assert m["kld_mean"] == pytest.approx(s.kld.mean())
    f = s.kld.mean()
    assert m["kld_mean_err"] == pytest.approx(math.sqrt(((s.kld ** 2).mean() - f * f) / (n - 1)))
    assert m["kld_median"] == pytest.approx(np.median(s.kld))
    assert m["kld_p99"] == pytest.approx(np.percentile(s.kld, 99))
    assert m["kld_max"] == pytest.approx(s.kld.max())
    assert m["ppl"] == pytest.approx(math.exp(s.nll.mean()))
    assert m["ppl_ref"] == pytest.approx(math.exp(s.nll_ref.mean()))
    assert m["ppl_ratio"] == pytest.approx(m["ppl"] / m["ppl_ref"])
    nll_err = math.sqrt(((s.nll ** 2).mean() - s.nll.mean() ** 2) / (n - 1))
    assert m["ppl_err"] == pytest.approx(m["ppl"] * nll_err)
    cov = ((s.nll * s.nll_ref).mean() - s.nll.mean() * s.nll_ref.mean()) / (n - 1)
    ref_err = math.sqrt(((s.nll_ref ** 2).mean() - s.nll_ref.mean() ** 2) / (n - 1))
    assert m["ppl_ratio_err"] == pytest.approx(m["ppl_ratio"] * math.sqrt(nll_err ** 2 + ref_err ** 2 - 2 * cov))
    p = s.same_top.mean()
    assert m["same_top_p"] == pytest.approx(p)
    assert m["same_top_p_err"] == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)))
    assert m["delta_p_rms"] == pytest.approx(math.sqrt((s.delta_p ** 2).mean()))
    assert m["delta_p_mean"] == pytest.approx(s.delta_p.mean())


def test_concat_and_chunked_scoring_match_one_pass():
    ref, cand, t = _random(n=30)
    whole = q.score(q.compress(ref, t, 8), cand, t)
    parts = q.concat([q.compress(ref[:10], t[:10], 8), q.compress(ref[10:], t[10:], 8)])
    np.testing.assert_array_equal(parts.top_ids, q.compress(ref, t, 8).top_ids)
    np.testing.assert_allclose(q.score(parts, cand, t).kld, whole.kld)
    with pytest.raises(ValueError, match="different K"):
        q.concat([q.compress(ref, t, 8), q.compress(ref, t, 4)])


def test_bad_shapes_and_another_vocabulary_are_refused():
    ref, cand, t = _random(n=5, v=16)
    r = q.compress(ref, t, 4)
    with pytest.raises(ValueError, match="positions"):
        q.score(r, cand[:4], t[:4])
    with pytest.raises(ValueError, match="vocabulary"):
        q.score(q.compress(np.pad(ref, ((0, 0), (0, 16))) + np.eye(5, 32, 20) * 99, t, 4), cand, t)
    with pytest.raises(ValueError, match="target"):
        q.compress(ref, t + 100, 4)


def _samples(scores: q.TokenScores) -> pd.DataFrame:
    rows = []
    for m in q.TOKEN_METRICS:
        for i, v in enumerate(getattr(scores, m)):
            rows.append({"rep": 0, "phase": "quality", "metric": m, "idx": i, "label": "", "value": float(v)})
    rows.append({"rep": 0, "phase": "decode", "metric": "decode_step_ns", "idx": 0, "label": "", "value": 1e6})
    return pd.DataFrame(rows)


def test_summarize_samples_rebuilds_the_scores():
    ref, cand, t = _random(n=50)
    s = q.score(q.compress(ref, t, 16), cand, t)
    assert q.summarize_samples(_samples(s)) == pytest.approx(q.summarize(s))
    assert q.summarize_samples(_samples(s)[lambda d: d["metric"] == "decode_step_ns"]) == {}


def test_fastest_under_picks_the_fastest_acceptable_level_per_group():
    rows = [
        {"device": "d", "backend": "llama-cpp", "model": "m", "quant": "F16", "kld_mean": 0.0, "decode_tok_s": 50, "status": "ok"},
        {"device": "d", "backend": "llama-cpp", "model": "m", "quant": "Q8_0", "kld_mean": 0.001, "decode_tok_s": 90, "status": "ok"},
        {"device": "d", "backend": "llama-cpp", "model": "m", "quant": "Q4_K_M", "kld_mean": 0.05, "decode_tok_s": 140, "status": "ok"},
        {"device": "d", "backend": "llama-cpp", "model": "m", "quant": "Q2_K", "kld_mean": 0.5, "decode_tok_s": 200, "status": "ok"},
        {"device": "d", "backend": "llama-cpp", "model": "m", "quant": "Q3_K_M", "kld_mean": 0.01, "decode_tok_s": 300, "status": "failed"},
    ]
    assert q.fastest_under(rows, 0.1)["quant"] == "Q4_K_M"
    assert q.fastest_under(rows, 0.01)["quant"] == "Q8_0"
    assert q.fastest_under(rows, -1) is None
    other = dict(rows[3], device="e")
    groups = q.fastest_by_group(rows + [other], 0.01)
    assert groups[("d", "llama-cpp", "m")]["quant"] == "Q8_0"
    assert groups[("e", "llama-cpp", "m")] is None
