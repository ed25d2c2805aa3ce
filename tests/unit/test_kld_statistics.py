"""llama.cpp's and exllamav3's per-token statistics against hand computations on 3 tokens of a 4-token vocabulary.

The baseline's and the format's probabilities are written out; every expected number below is worked by hand from
them (the comments show the arithmetic). The runner computes them through evaluate() with an engine that returns
these log-probs.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from runner import metrics as M
from runner.quality import scoring
from runner.quality.reference import Reference
from runner.quality.stream import TokenStream, iter_windows
from runner.stages import evaluate as evaluate_stage
from runner.stats.bootstrap import WindowSums, quality_intervals
from runner.stats.histogram import RESOLUTION, Histogram

# rows: the 3 scored positions; columns: the vocabulary (4 tokens)
BASELINE_P = np.array([[0.7, 0.1, 0.1, 0.1], [0.4, 0.3, 0.2, 0.1], [0.01, 0.01, 0.01, 0.97]])
FORMAT_P = np.array([[0.5, 0.2, 0.2, 0.1], [0.3, 0.4, 0.2, 0.1], [0.01, 0.01, 0.01, 0.97]])
TARGETS = np.array([0, 1, 3])  # the correct next token at each position
# KLD per token: 0.7 ln(0.7/0.5) + 2 * 0.1 ln(0.1/0.2) + 0.1 ln 1;  0.4 ln(0.4/0.3) + 0.3 ln(0.3/0.4);  0
KLD = [0.7 * math.log(1.4) + 0.2 * math.log(0.5), 0.1 * math.log(4 / 3), 0.0]  # 0.0969011, 0.0287682, 0
DP = [0.5 - 0.7, 0.4 - 0.3, 0.97 - 0.97]  # p_format(correct) - p_baseline(correct)


class _Engine:
    """An engine whose one window's log-probs are FORMAT_P at the scored rows."""

    NAME = "fake"

    def load(self, artifact, model, hardware, context_tokens=None):
        def logprobs(inputs):
            assert len(inputs) == 4
            return np.log(np.vstack([FORMAT_P, np.full(4, 0.25)])).astype(np.float32)

        loaded = SimpleNamespace(logprobs=logprobs, close=lambda: None)
        loaded.logprobs_many = lambda windows: _Closing(logprobs(w) for w in windows)
        return loaded


class _Closing:
    def __init__(self, gen):
        self.gen = gen

    def __iter__(self):
        return self.gen

    def close(self):
        pass


def _reference() -> Reference:
    top_ids, top_lps = scoring.topk(np.log(BASELINE_P), 4)
    return Reference(-np.log(BASELINE_P[np.arange(3), TARGETS]), top_ids, top_lps, "base", "base-key", "torch")


def _quality(monkeypatch) -> dict:
    monkeypatch.setattr(evaluate_stage, "get_engine", lambda name: _Engine())
    # one window of 4 ids without BOS: rows 0..2 predict ids 1..3 = TARGETS
    stream = TokenStream(np.array([2, *TARGETS], dtype=np.int32), None, "sha", "hand", "key", add_bos=False)
    eval_cfg = SimpleNamespace(ctx_len=4, stride=4, add_bos=False, bootstrap=SimpleNamespace(resamples=0, seed=0))
    artifact = SimpleNamespace(manifest={"key": "format-key", "format": "hand"})
    quality, _ = evaluate_stage.evaluate(artifact, None, eval_cfg, stream, _reference(), None, "fake")
    return quality


def test_llama_cpp_statistics_by_hand(monkeypatch):
    q = _quality(monkeypatch)
    assert q[M.QUALITY_KLD_MEAN] == pytest.approx(sum(KLD) / 3, rel=1e-6)  # 0.0418898
    # Δp: mean (-0.2 + 0.1 + 0) / 3; RMS √((0.04 + 0.01 + 0) / 3) = 0.1290994 (llama.cpp's "RMS Δp")
    assert q[M.QUALITY_DP_MEAN] == pytest.approx(-0.1 / 3, rel=1e-6)
    assert q[M.QUALITY_DP_RMS] == pytest.approx(math.sqrt(0.05 / 3), rel=1e-6)
    # same top token at positions 0 and 2, not 1 (format: token 1; baseline: token 0)
    assert q[M.QUALITY_TOP1_AGREE] == pytest.approx(2 / 3)
    # PPL(Q)/PPL(base) = exp(mean(ln p_base - ln p_format)) = (0.7 * 0.3 * 0.97 / (0.5 * 0.4 * 0.97))^(1/3)
    assert q[M.QUALITY_PPL_RATIO] == pytest.approx(1.05 ** (1 / 3), rel=1e-6)


def test_kld_and_dp_percentiles_by_hand(monkeypatch):
    q = _quality(monkeypatch)
    # sorted KLD 0, 0.0287682, 0.0969011: the median is the middle one (within one bin), the max exact;
    # p90 at rank 0.9 * 2 = 1.8: 0.0287682 + 0.8 * (0.0969011 - 0.0287682) = 0.0832746
    assert q[M.QUALITY_KLD_P50] == pytest.approx(KLD[1], rel=RESOLUTION)
    assert q[M.QUALITY_KLD_MAX] == pytest.approx(KLD[0], rel=1e-6)  # exact (float32 log-probs)
    assert q[M.QUALITY_KLD_P90] == pytest.approx(KLD[1] + 0.8 * (KLD[0] - KLD[1]), rel=RESOLUTION)
    assert q[M.QUALITY_KLD_P99_9] == pytest.approx(KLD[1] + 0.998 * (KLD[0] - KLD[1]), rel=RESOLUTION)
    # sorted Δp -0.2, 0, 0.1: min and max exact, the median 0, p99 at rank 1.98: 0 + 0.98 * 0.1
    assert q[M.QUALITY_DP_MIN] == pytest.approx(-0.2)
    assert q[M.QUALITY_DP_MAX] == pytest.approx(0.1)
    assert q[M.QUALITY_DP_P50] == pytest.approx(0.0, abs=1e-9)
    assert q[M.QUALITY_DP_P99] == pytest.approx(0.098, rel=1e-6)
    # p01 at rank 0.02: -0.2 + 0.02 * (0 - -0.2)
    assert q[M.QUALITY_DP_P01] == pytest.approx(-0.196, rel=1e-6)


def test_kld_by_baseline_confidence_by_hand(monkeypatch):
    q = _quality(monkeypatch)
    # the baseline's top-1 p: 0.7 -> [0.5, 0.75), 0.4 -> [0.25, 0.5), 0.97 -> [0.95, 1]; one token each
    assert q[M.kld_by_confidence(0.5, 0.75, "share")] == pytest.approx(1 / 3)
    assert q[M.kld_by_confidence(0.5, 0.75, "mean")] == pytest.approx(KLD[0], rel=1e-6)
    assert q[M.kld_by_confidence(0.25, 0.5, "mean")] == pytest.approx(KLD[1], rel=1e-6)
    assert q[M.kld_by_confidence(0.25, 0.5, "p50")] == pytest.approx(KLD[1], rel=RESOLUTION)
    assert q[M.kld_by_confidence(0.95, 1.0, "share")] == pytest.approx(1 / 3)
    assert q[M.kld_by_confidence(0.95, 1.0, "mean")] == 0.0
    # no token in the two other buckets: a share of 0 and no mean (not a mean of 0)
    for lo, hi in ((0.0, 0.25), (0.75, 0.95)):
        assert q[M.kld_by_confidence(lo, hi, "share")] == 0.0
        assert M.kld_by_confidence(lo, hi, "mean") not in q
    assert all(M.is_declared(name) for name in q)


def test_ppl_ratio_and_dp_intervals_come_from_window_sums():
    # two windows of 2 tokens: Δp 0.1, 0.3 | -0.1, 0.1; NLL differences 0.2, 0 | 0.1, 0.1
    nll, base = np.array([1.2, 1.0, 0.6, 0.6]), np.array([1.0, 1.0, 0.5, 0.5])
    w = WindowSums.from_tokens([2, 2], nll, np.zeros(4), np.ones(4), base, np.array([0.1, 0.3, -0.1, 0.1]))
    ci = quality_intervals(w, 200, 0)
    # the resamples take whole windows: window means of (nll - base) are 0.1 and 0.1, so the ratio is exactly e^0.1
    assert ci[M.QUALITY_PPL_RATIO + "_ci_low"] == pytest.approx(math.exp(0.1))
    assert ci[M.QUALITY_PPL_RATIO + "_ci_high"] == pytest.approx(math.exp(0.1))
    # Δp's mean is 0.2 or 0 per window, its RMS √((0.01 + 0.09) / 2) or √((0.01 + 0.01) / 2)
    assert 0.0 <= ci[M.QUALITY_DP_MEAN + "_ci_low"] <= ci[M.QUALITY_DP_MEAN + "_ci_high"] <= 0.2
    assert math.sqrt(0.01) - 1e-12 <= ci[M.QUALITY_DP_RMS + "_ci_low"] <= ci[M.QUALITY_DP_RMS + "_ci_high"]
    assert ci[M.QUALITY_DP_RMS + "_ci_high"] <= math.sqrt(0.05) + 1e-12


def test_window_sums_of_an_older_run_have_no_dp_interval():
    old = '{"version": 1, "resamples": 10, "seed": 0, "protocol": {}, "tokens": [2, 2], "nll": [1, 1], "kld": [0, 0],'
    old += ' "agree": [2, 2], "baseline_nll": [1, 1]}'
    ci = quality_intervals(WindowSums.from_json(old), 50, 0)
    assert M.QUALITY_PPL + "_ci_low" in ci and M.QUALITY_DP_RMS + "_ci_low" not in ci


def test_histogram_percentiles_within_one_bin_of_numpy():
    rng = np.random.default_rng(0)
    values = rng.lognormal(-6, 2.5, size=20_000)  # KLD-like: many decades
    hist = Histogram.nonnegative()
    for chunk in np.array_split(values, 7):  # window by window
        hist.add(chunk)
    for q in (0.5, 0.9, 0.99, 0.999):
        assert hist.quantile(q) == pytest.approx(np.percentile(values, 100 * q), rel=RESOLUTION)
    assert hist.quantile(1.0) == values.max() and hist.quantile(0.0) == values.min()
    signed = Histogram.signed()
    dp = rng.normal(0, 0.05, size=5_000)
    signed.add(dp)
    for q in (0.01, 0.5, 0.99):
        exact = np.percentile(dp, 100 * q)
        assert signed.quantile(q) == pytest.approx(exact, rel=RESOLUTION, abs=1e-9)


def test_llama_perplexity_chunks_match_its_protocol():
    # llama-perplexity with BOS: tokens = [BOS] + ids, chunks of n_ctx, BOS written over each chunk's first token,
    # logits at positions n_ctx/2 .. n_ctx-2 scored against the next token. By hand for n_ctx 8 and ids 10..27:
    # tokens = [B, 10, ..., 27] (19), 2 chunks; chunk 1 = tokens[8:16] = [17..24] -> [B, 18..24];
    # positions 4..6 predict tokens 22, 23, 24 (and in chunk 0, [B, 10..16], tokens 14, 15, 16)
    stream = TokenStream(np.arange(10, 28, dtype=np.int32), 1, "sha", "hand", "key", add_bos=True)
    cfg = SimpleNamespace(ctx_len=8, stride=8, add_bos=True, windows="llama_perplexity")
    windows = list(iter_windows(stream, cfg))
    assert [w[0] for w in windows] == [[1, *range(10, 17)], [1, *range(18, 25)]]
    assert [w[1].tolist() for w in windows] == [[4, 5, 6], [4, 5, 6]]
    assert [w[2].tolist() for w in windows] == [[14, 15, 16], [22, 23, 24]]
    # without BOS: chunks ids[0:8], ids[8:16]; positions 4..6 predict ids 5..7 of each
    stream.add_bos = False
    windows = list(
        iter_windows(stream, SimpleNamespace(ctx_len=8, stride=8, add_bos=False, windows="llama_perplexity"))
    )
    assert [w[0] for w in windows] == [list(range(10, 18)), list(range(18, 26))]
    assert [w[2].tolist() for w in windows] == [[15, 16, 17], [23, 24, 25]]


def test_the_report_shows_them_in_llama_cpps_words(monkeypatch):
    from runner.report.data import Row
    from runner.report.quality_tables import quality_markdown

    q = _quality(monkeypatch)
    q[M.QUALITY_DP_RMS + "_ci_low"], q[M.QUALITY_DP_RMS + "_ci_high"] = 0.12, 0.14
    text = quality_markdown([Row("r", "FINISHED", {"format.name": "hand", "eval.protocol": "by hand"}, q)])
    header, _, row = text.split("\n## KLD by")[0].strip().splitlines()[-3:]
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    assert cells["RMS Δp"] == "12.910% ±1.000%"  # √(0.05 / 3), ± half the interval
    assert cells["same top p"] == "66.7%" and cells["PPL(Q)/PPL(base)"] == "1.0164"
    assert cells["KLD max"] == "0.097" and cells["Δp mean"] == "-3.333%"
    # the confidence table: share: mean / median per bucket, the empty buckets a share alone
    conf = [c.strip() for c in text.split("\n## KLD by")[1].strip().splitlines()[-1].split("|")[2:-1]]
    assert conf[0] == conf[3] == "0%"  # [0, .25) and [.75, .95): no token
    assert conf[1].startswith("33%: 0.02877 / 0.02") and conf[2].startswith("33%: 0.09690 / 0.09")
    assert conf[4] == "33%: 0.00000 / 0.000000"
    # runs from before the statistics existed: no section
    assert quality_markdown([Row("old", "FINISHED", {"format.name": "old"}, {M.QUALITY_PPL: 3.0})]) == ""
