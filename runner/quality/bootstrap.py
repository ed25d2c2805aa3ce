"""Uncertainty of the quality metrics: a paired bootstrap over scoring windows (pure numpy).

The unit resampled is the scoring window (runner/quality/stream.py iter_windows): each scored token
belongs to exactly one window, and the baseline and the format are scored on the same windows, so
one resample of window indices is applied to both (a paired bootstrap). Per window, the inputs are
sums already computed by evaluate: NLL, token count, KLD, top-1 agreements, and the baseline's NLL.
Ratios are taken of resampled sums (ppl = exp(sum nll / sum tokens)), so windows of unequal length
weigh as their tokens do. The one bootstrap of the runner: evaluate's intervals (quality_intervals) and
dequant_check's (window_mean_interval) draw the same resamples for the same windows and eval.bootstrap.

What the interval covers: the variation of the metric over text like this eval stream, cut into
windows of this protocol, with the model's outputs fixed (greedy scoring is deterministic). It
treats windows as independent draws. They are not quite: neighbouring windows of one text share
its topic and, with stride < ctx_len, overlapping context, so the interval is somewhat too narrow
for a different corpus; it says nothing about other corpora or other window protocols.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from runner.metrics import QUALITY_KLD_MEAN, QUALITY_PPL, QUALITY_PPL_DELTA_PCT, QUALITY_TOP1_AGREE

LEVEL = 0.95  # the metric names say "_ci_"; the summary's legend says 95 %


@dataclass
class WindowSums:
    """Per-window sums (each [n_windows]) of one format's scoring, and the baseline's NLL on the same tokens."""

    nll: np.ndarray
    tokens: np.ndarray
    kld: np.ndarray
    agree: np.ndarray
    baseline_nll: np.ndarray

    @classmethod
    def from_tokens(cls, sizes, nll, kld, agree, baseline_nll) -> "WindowSums":
        """Sum per-token arrays over consecutive windows of `sizes` tokens (the order iter_windows scores them)."""
        sizes = np.asarray(sizes, dtype=np.int64)
        if not sizes.sum() == len(nll) == len(kld) == len(agree) == len(baseline_nll):
            raise ValueError(
                f"window sizes sum to {sizes.sum()}; per-token lengths {len(nll)}, {len(kld)}, "
                f"{len(agree)}, baseline {len(baseline_nll)}: not the same windows"
            )
        return cls(
            window_sums(sizes, nll),
            sizes[sizes > 0].astype(np.float64),
            window_sums(sizes, kld),
            window_sums(sizes, agree),
            window_sums(sizes, baseline_nll),
        )


def window_sums(sizes, per_token) -> np.ndarray:
    """Sums of a per-token array over consecutive windows of `sizes` tokens; empty windows are dropped (no units)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    keep = sizes > 0
    return np.add.reduceat(np.asarray(per_token, dtype=np.float64), starts[keep]) if keep.any() else np.zeros(0)


def resample_counts(n_windows: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n_windows]: how often each window is drawn in each resample (with replacement)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_windows, size=(resamples, n_windows))  # one matrix of resampled window indices
    flat = (idx + n_windows * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n_windows).reshape(resamples, n_windows).astype(np.float64)


def percentile_interval(values: np.ndarray) -> Tuple[float, float]:
    """The LEVEL percentile interval of resampled values."""
    tail = 100.0 * (1.0 - LEVEL) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def window_mean_interval(per_window: Sequence[np.ndarray], resamples: int, seed: int) -> Optional[Tuple[float, float]]:
    """Interval of the token mean of any per-token quantity given as one array per scoring window (in scoring order).

    The same draws and ratio as quality_intervals (resampled sums / resampled token counts): for the KLD arrays of
    a run it is that run's quality/kld_mean interval. Pass per-token differences of two runs on the same tokens for
    a paired interval. None where quality_intervals gives none (fewer than 2 non-empty windows, or resamples 0).
    """
    sizes = [len(w) for w in per_window]
    sums = window_sums(sizes, np.concatenate(per_window) if sizes else np.zeros(0))
    tokens = np.asarray([n for n in sizes if n > 0], dtype=np.float64)
    if len(tokens) < 2 or resamples < 1:
        return None
    counts = resample_counts(len(tokens), resamples, seed)
    return percentile_interval((counts @ sums) / (counts @ tokens))


def quality_intervals(w: WindowSums, resamples: int, seed: int) -> Dict[str, float]:
    """95 % percentile intervals of ppl, Δppl % (paired), KLD mean and top-1 agreement, as `<metric>_ci_low/_high`.

    Empty when there are fewer than 2 windows (no spread to resample) or resamples is 0.
    """
    n = len(w.tokens)
    if n < 2 or resamples < 1:
        return {}
    counts = resample_counts(n, resamples, seed)
    # paired: the format's NLL minus the baseline's, per window, resampled with the same counts
    stats = np.stack([w.tokens, w.nll, w.nll - w.baseline_nll, w.kld, w.agree], axis=1)  # [n, 5]
    tokens, nll, diff, kld, agree = (counts @ stats).T  # [resamples] each
    values = {
        QUALITY_PPL: np.exp(nll / tokens),
        QUALITY_PPL_DELTA_PCT: 100.0 * np.expm1(diff / tokens),
        QUALITY_KLD_MEAN: kld / tokens,
        QUALITY_TOP1_AGREE: agree / tokens,
    }
    out = {}
    for name, v in values.items():
        out[name + "_ci_low"], out[name + "_ci_high"] = percentile_interval(v)
    return out


def spread(values) -> Dict[str, float]:
    """min, max and coefficient of variation (sample std / mean) of repeated measurements; {} for < 2 values."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return {}
    mean = float(np.mean(v))
    return {"min": float(np.min(v)), "max": float(np.max(v)), "cv": float(np.std(v, ddof=1) / mean) if mean else 0.0}
