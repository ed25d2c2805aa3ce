"""The quality math against hand computations."""

import math

import numpy as np
import pytest

from runner.quality import scoring as M


def _log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    return (
        x
        - np.log(np.exp(x - x.max(axis=-1, keepdims=True)).sum(axis=-1, keepdims=True))
        - x.max(axis=-1, keepdims=True)
    )


def test_perplexity_by_hand():
    lp = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    nll = M.token_nll(lp, np.array([0, 1]))
    assert nll == pytest.approx([math.log(2), -math.log(0.8)])
    # ppl = exp(mean(nll)) = 1 / geometric mean of the target probabilities = 1/sqrt(0.5*0.8)
    assert M.perplexity(nll) == pytest.approx(1 / math.sqrt(0.4))


def test_kld_by_hand_three_tokens():
    p = np.array([[0.7, 0.2, 0.1]])
    q = np.array([[0.5, 0.3, 0.2]])
    expected = 0.7 * math.log(0.7 / 0.5) + 0.2 * math.log(0.2 / 0.3) + 0.1 * math.log(0.1 / 0.2)
    ids, lps = M.topk(np.log(p), k=3)
    assert M.kld_topk(ids, lps, np.log(q))[0] == pytest.approx(expected, rel=1e-6)
    # top-2 + one bucket for the rest: categories {0.7, 0.2, 0.1} vs {0.5, 0.3, 0.2} -- same as full here
    ids2, lps2 = M.topk(np.log(p), k=2)
    assert M.kld_topk(ids2, lps2, np.log(q))[0] == pytest.approx(expected, rel=1e-6)
    # top-1 + rest: {0.7, 0.3} vs {0.5, 0.5}
    ids1, lps1 = M.topk(np.log(p), k=1)
    assert M.kld_topk(ids1, lps1, np.log(q))[0] == pytest.approx(
        0.7 * math.log(0.7 / 0.5) + 0.3 * math.log(0.3 / 0.5), rel=1e-6
    )


def test_topk_kld_is_a_lower_bound_that_tightens_with_k():
    rng = np.random.default_rng(0)
    ref = _log_softmax(rng.normal(size=(50, 200)) * 3)
    cand = _log_softmax(np.log(np.exp(ref)) + rng.normal(size=(50, 200)) * 0.5)
    full = np.sum(np.exp(ref) * (ref - cand), axis=1)
    previous = np.zeros(50)
    for k in (1, 8, 64, 200):
        ids, lps = M.topk(ref, k)
        kld = M.kld_topk(ids, lps, cand)
        assert np.all(kld <= full + 1e-5)  # reference log-probs are stored as float32
        assert np.all(kld >= previous - 1e-5)
        previous = kld
    np.testing.assert_allclose(previous, full, rtol=1e-5, atol=1e-9)


def test_identical_distributions_give_zero_kld_and_full_agreement():
    ref = _log_softmax(np.random.default_rng(1).normal(size=(10, 30)))
    ids, lps = M.topk(ref, 5)
    assert np.allclose(M.kld_topk(ids, lps, ref), 0, atol=1e-7)
    assert M.top1_agreement(ids[:, 0], ref).all()


def test_topk_is_sorted_best_first():
    lp = np.log(np.array([[0.1, 0.6, 0.3]]))
    ids, lps = M.topk(lp, 3)
    assert ids.tolist() == [[1, 2, 0]]
    assert np.allclose(np.exp(lps), [[0.6, 0.3, 0.1]])


def test_top1_agreement_counts_matches():
    ref_top1 = np.array([0, 2])
    cand = np.log(np.array([[0.9, 0.05, 0.05], [0.5, 0.4, 0.1]]))
    assert M.top1_agreement(ref_top1, cand).tolist() == [True, False]
