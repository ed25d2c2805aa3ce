"""Uncertainty of the quality metrics: a paired bootstrap over scoring windows (pure numpy).

The unit resampled is the scoring window (runner/quality/stream.py iter_windows): each scored token
belongs to exactly one window, and the baseline and the format are scored on the same windows, so
one resample of window indices is applied to both (a paired bootstrap). Per window, the inputs are
sums already computed by evaluate: NLL, token count, KLD, top-1 agreements, the baseline's NLL, and Δp and Δp²
(RMS Δp = √(sum Δp² / sum tokens)).
Ratios are taken of resampled sums (ppl = exp(sum nll / sum tokens)), so windows of unequal length
weigh as their tokens do. The one bootstrap of the runner: evaluate's intervals (quality_intervals),
dequant_check's (window_mean_interval) and the report's difference of two formats (paired_difference)
draw the same resamples for the same windows and eval.bootstrap.

Two formats scored on the same windows are compared by the interval of their difference, resampled
with one set of counts for both: the windows' difficulty sits in both and cancels, where the overlap
of two separate intervals would keep it (and call pairs "tied" whose difference is far from 0).

The interval is the expanded percentile interval (Hesterberg, 2015): the plain percentile interval of
a mean over n units covers less than its nominal level for small n (~89 % for 8 windows at 95 %);
its tails are taken at Φ(−√(n/(n−1))·t₀.₉₇₅,ₙ₋₁) instead of 2.5 %, which restores the coverage of a t
interval and converges to the plain interval as n grows.

What the interval covers: the variation of the metric over text like this eval stream, cut into
windows of this protocol, with the model's outputs fixed (greedy scoring is deterministic). It
treats windows as independent draws. They are not quite: neighbouring windows of one text share
its topic and, with stride < ctx_len, overlapping context, so the interval is somewhat too narrow
for a different corpus; it says nothing about other corpora or other window protocols.
"""

import json
import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from runner.metrics import (
    QUALITY_DP_MEAN,
    QUALITY_DP_RMS,
    QUALITY_KLD_MEAN,
    QUALITY_PPL,
    QUALITY_PPL_DELTA_PCT,
    QUALITY_PPL_RATIO,
    QUALITY_TOP1_AGREE,
)

LEVEL = 0.95  # the metric names say "_ci_"; the summary's legend says 95 %
FIELDS = ("tokens", "nll", "kld", "agree", "baseline_nll", "dp", "dp2")
FORMAT_VERSION = 2  # of the window_sums.json artifact (1: without dp, dp2, read with them unknown)


@dataclass
class WindowSums:
    """Per-window sums (each [n_windows]) of one format's scoring, and the baseline's NLL on the same tokens.

    `protocol` names the windows (the eval protocol's params and the baseline's artifact and engine): two runs'
    sums are paired only when it and the token counts are equal."""

    nll: np.ndarray
    tokens: np.ndarray
    kld: np.ndarray
    agree: np.ndarray
    baseline_nll: np.ndarray
    protocol: Dict[str, str] = field(default_factory=dict)
    resamples: int = 0
    seed: int = 0
    dp: Optional[np.ndarray] = None  # Δp: p(correct token) under the format - under the baseline; None: unknown
    dp2: Optional[np.ndarray] = None  # Δp²

    def __post_init__(self):
        for name in ("dp", "dp2"):  # not recorded (an older run's file): NaN, so no statistic of it passes for real
            if getattr(self, name) is None:
                setattr(self, name, np.full(len(self.tokens), np.nan))

    @classmethod
    def from_tokens(cls, sizes, nll, kld, agree, baseline_nll, dp=None) -> "WindowSums":
        """Sum per-token arrays over consecutive windows of `sizes` tokens (the order iter_windows scores them)."""
        sizes = np.asarray(sizes, dtype=np.int64)
        dp = np.full(len(nll), np.nan) if dp is None else np.asarray(dp, dtype=np.float64)
        if not sizes.sum() == len(nll) == len(kld) == len(agree) == len(baseline_nll) == len(dp):
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
            dp=window_sums(sizes, dp),
            dp2=window_sums(sizes, np.square(dp)),
        )

    def to_json(self) -> str:
        arrays = {f: [float(v) for v in getattr(self, f)] for f in FIELDS}
        meta = {"resamples": self.resamples, "seed": self.seed, "protocol": self.protocol}
        return json.dumps({"version": FORMAT_VERSION, **meta, **arrays})

    @classmethod
    def from_json(cls, text: str) -> "WindowSums":
        d = json.loads(text)
        if d.get("version") not in (1, FORMAT_VERSION):
            raise ValueError(f"window sums of version {d.get('version')}, this runner reads 1 and {FORMAT_VERSION}")
        arrays = {f: np.asarray(d[f], dtype=np.float64) for f in FIELDS if f in d}  # version 1: no dp, dp2
        return cls(**arrays, protocol=d["protocol"], resamples=int(d["resamples"]), seed=int(d["seed"]))

    def pairs_with(self, other: "WindowSums") -> bool:
        """Scored on the same windows against the same baseline: a paired difference is meaningful."""
        return (
            self.protocol == other.protocol
            and len(self.tokens) == len(other.tokens)
            and bool(np.array_equal(self.tokens, other.tokens))
            and bool(np.allclose(self.baseline_nll, other.baseline_nll, rtol=1e-9, atol=1e-9))
        )

    def resampled(self, counts: np.ndarray) -> Dict[str, np.ndarray]:
        """Each field's sum in each resample ([resamples] per field)."""
        return {f: counts @ getattr(self, f) for f in FIELDS}

    def totals(self) -> Dict[str, np.ndarray]:
        return {f: np.asarray([getattr(self, f).sum()]) for f in FIELDS}


# each quality metric as a statistic of (resampled) window sums
STATISTICS: Dict[str, Callable[[Dict[str, np.ndarray]], np.ndarray]] = {
    QUALITY_PPL: lambda s: np.exp(s["nll"] / s["tokens"]),
    QUALITY_PPL_DELTA_PCT: lambda s: 100.0 * np.expm1((s["nll"] - s["baseline_nll"]) / s["tokens"]),
    QUALITY_KLD_MEAN: lambda s: s["kld"] / s["tokens"],
    QUALITY_TOP1_AGREE: lambda s: s["agree"] / s["tokens"],
    QUALITY_PPL_RATIO: lambda s: np.exp((s["nll"] - s["baseline_nll"]) / s["tokens"]),
    QUALITY_DP_MEAN: lambda s: s["dp"] / s["tokens"],
    QUALITY_DP_RMS: lambda s: np.sqrt(s["dp2"] / s["tokens"]),
}


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


def tail_pct(n_units: int) -> float:
    """The percentile (in %) each tail of the expanded LEVEL interval is taken at, for a mean over n_units."""
    from scipy.stats import t

    alpha = 1.0 - LEVEL
    if n_units < 2:
        return 100.0 * alpha / 2.0
    z = math.sqrt(n_units / (n_units - 1)) * float(t.ppf(1.0 - alpha / 2.0, n_units - 1))
    return 100.0 * NormalDist().cdf(-z)


def percentile_interval(values: np.ndarray, n_units: int) -> Tuple[float, float]:
    """The expanded LEVEL percentile interval of resampled values of a statistic over n_units resampled units."""
    tail = tail_pct(n_units)
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
    return percentile_interval((counts @ sums) / (counts @ tokens), len(tokens))


def quality_intervals(w: WindowSums, resamples: int, seed: int) -> Dict[str, float]:
    """95 % intervals of ppl, Δppl % and the ppl ratio (paired with the baseline), KLD mean, top-1 agreement, and Δp's
    mean and RMS, as `<metric>_ci_low/_high`. Empty when there are fewer than 2 windows (no spread to resample) or
    resamples is 0; none for a statistic of sums not recorded (Δp in an older run's sums)."""
    n = len(w.tokens)
    if n < 2 or resamples < 1:
        return {}
    s = w.resampled(resample_counts(n, resamples, seed))
    out = {}
    for name, statistic in STATISTICS.items():
        values = statistic(s)
        if np.all(np.isfinite(values)):
            out[name + "_ci_low"], out[name + "_ci_high"] = percentile_interval(values, n)
    return out


def paired_difference(a: WindowSums, b: WindowSums, name: str) -> Optional[Tuple[float, float, float]]:
    """(a − b, low, high) on quality metric `name`: the difference and its interval, both runs resampled with the
    same counts (a's eval.bootstrap settings). None when the two were not scored on the same windows, a metric has
    no window statistic, there are fewer than 2 windows, or the bootstrap was off."""
    statistic = STATISTICS.get(name)
    n = len(a.tokens)
    if statistic is None or not a.pairs_with(b) or n < 2 or a.resamples < 1:
        return None
    counts = resample_counts(n, a.resamples, a.seed)
    diff = statistic(a.resampled(counts)) - statistic(b.resampled(counts))
    point = float(statistic(a.totals())[0] - statistic(b.totals())[0])
    low, high = percentile_interval(diff, n)
    return point, low, high
