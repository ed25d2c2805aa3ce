"""How a format's per-token losses are spread: llama.cpp's `llama-perplexity --kl-divergence` statistics and
exllamav3's KLD by the baseline's confidence, accumulated window by window in fixed memory.

- KLD percentiles (median, p90, p99, p99.9, max) of the per-token KL(baseline || format).
- Δp: the change in the probability of the correct (next) token, p_format − p_baseline, per token; its mean, RMS
  (llama.cpp's "RMS Δp": √mean(Δp²)) and percentiles.
- KLD by the baseline's confidence (exllamav3's eval/model_diff.py): tokens grouped by the baseline's top-1
  probability into [0, .25), [.25, .5), [.5, .75), [.75, .95), [.95, 1]; per group its share of the tokens, its mean
  and its median KLD. The mean KLD is dominated by tokens where the baseline itself is undecided; these say where.

Percentiles come from fixed-bin histograms (runner/stats/histogram.py: within 2.33 % of the exact value, the
extremes exact). llama.cpp's "Same top p" is the runner's top-1 agreement (quality/top1_agree).
"""

from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np

from runner import metrics as M
from runner.stats.histogram import Histogram

# exllamav3's buckets of the baseline's top-1 probability; the last one's upper edge holds p = 1
CONFIDENCE_EDGES: Tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.95, 1.0)


def delta_p(nll: np.ndarray, baseline_nll: np.ndarray) -> np.ndarray:
    """Per token: the format's probability of the correct token minus the baseline's (both from their NLLs)."""
    return np.exp(-np.asarray(nll, dtype=np.float64)) - np.exp(-np.asarray(baseline_nll, dtype=np.float64))


def confidence_bucket(baseline_top1_p: np.ndarray) -> np.ndarray:
    """Index of each token's confidence bucket (0 .. len(CONFIDENCE_EDGES) - 2)."""
    inner = np.asarray(CONFIDENCE_EDGES[1:-1])
    return np.searchsorted(inner, np.asarray(baseline_top1_p, dtype=np.float64), side="right")


def _new_buckets() -> List[Histogram]:
    return [Histogram.nonnegative() for _ in CONFIDENCE_EDGES[:-1]]


@dataclass
class TokenDistribution:
    """Histograms and sums of one format's per-token KLD and Δp against the baseline, added window by window."""

    kld: Histogram = field(default_factory=Histogram.nonnegative)
    dp: Histogram = field(default_factory=Histogram.signed)
    kld_sum_by_confidence: np.ndarray = field(default_factory=lambda: np.zeros(len(CONFIDENCE_EDGES) - 1))
    kld_by_confidence: List[Histogram] = field(default_factory=_new_buckets)
    dp_sum: float = 0.0
    dp_sq_sum: float = 0.0

    def add(self, kld: np.ndarray, dp: np.ndarray, baseline_top1_p: np.ndarray) -> None:
        """One window's tokens: their KLD, Δp and the baseline's top-1 probability (equal lengths)."""
        kld, dp = np.asarray(kld, dtype=np.float64), np.asarray(dp, dtype=np.float64)
        assert len(kld) == len(dp) == len(baseline_top1_p), "per-token arrays of one window"
        self.kld.add(kld)
        self.dp.add(dp)
        self.dp_sum += float(dp.sum())
        self.dp_sq_sum += float(np.square(dp).sum())
        bucket = confidence_bucket(baseline_top1_p)
        self.kld_sum_by_confidence += np.bincount(bucket, weights=kld, minlength=len(self.kld_by_confidence))
        for b, hist in enumerate(self.kld_by_confidence):
            hist.add(kld[bucket == b])

    def metrics(self) -> Dict[str, float]:
        """The statistics as metrics of the catalog (runner/metrics.py); empty when no token was added."""
        n = self.kld.n
        if n == 0:
            return {}
        out: Dict[str, float] = {name: self._quantile(self.kld, q) for name, q in M.KLD_QUANTILES.items()}
        out.update({name: self._quantile(self.dp, q) for name, q in M.DP_QUANTILES.items()})
        out[M.QUALITY_DP_MEAN] = self.dp_sum / n
        out[M.QUALITY_DP_RMS] = float(np.sqrt(self.dp_sq_sum / n))
        for (lo, hi), hist, total in zip(M.CONFIDENCE_BUCKETS, self.kld_by_confidence, self.kld_sum_by_confidence):
            out[M.kld_by_confidence(lo, hi, "share")] = hist.n / n
            if hist.n:  # an empty bucket has no mean or median (not 0)
                out[M.kld_by_confidence(lo, hi, "mean")] = float(total) / hist.n
                out[M.kld_by_confidence(lo, hi, "p50")] = self._quantile(hist, 0.5)
        return out

    @staticmethod
    def _quantile(hist: Histogram, q: float) -> float:
        value = hist.quantile(q)
        assert value is not None
        return value
