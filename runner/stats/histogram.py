"""Percentiles of a per-token quantity over millions of tokens from fixed bins: memory and time stay constant.

The bins are log-spaced (100 per decade: each bin spans a factor 10^0.01, 2.33 %), so a percentile read from them
is the exact one to within 2.33 % of its value, at any scale from 1e-9 up; the smallest and largest values are kept
exactly. A quantity that is never negative (a KL-divergence) uses `nonnegative()`; one of either sign (Δp, the change
in the probability of the correct token) uses `signed()`, the same bins mirrored about a central bin that holds
|x| < 1e-9. Histograms of windows add up (`merge`), so a job accumulates them window by window and never holds or
sorts the per-token values.

A percentile is read the way numpy's default (and llama.cpp's `llama-perplexity`) reads it from sorted values: the
value at rank q·(n − 1), interpolated; inside the bin holding that rank, ranks are spread evenly across the bin.
"""

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

PER_DECADE = 100
SMALLEST = 1e-9  # below this a value sits in the first bin (KLD) or the central bin (Δp)
LARGEST = 1e3  # above this: the last bin, still bounded by the exact maximum
RESOLUTION = 10 ** (1 / PER_DECADE) - 1  # a bin's width relative to its lower edge: 2.33 %


def _magnitudes() -> np.ndarray:
    decades = int(round(np.log10(LARGEST / SMALLEST)))
    return np.logspace(np.log10(SMALLEST), np.log10(LARGEST), decades * PER_DECADE + 1)


@dataclass
class Histogram:
    """Counts of values in fixed bins: bin i holds edges[i] <= x < edges[i + 1]; values beyond the outer edges count
    in the outer bins (their exact extremes are `low` and `high`)."""

    edges: np.ndarray
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    low: float = float("inf")
    high: float = float("-inf")

    def __post_init__(self):
        if len(self.counts) == 0:
            self.counts = np.zeros(len(self.edges) - 1, dtype=np.int64)

    @classmethod
    def nonnegative(cls) -> "Histogram":
        return cls(np.concatenate([[0.0], _magnitudes()]))

    @classmethod
    def signed(cls) -> "Histogram":
        mags = _magnitudes()
        return cls(np.concatenate([-mags[::-1], mags]))

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        if not len(values):
            return
        idx = np.clip(np.searchsorted(self.edges, values, side="right") - 1, 0, len(self.counts) - 1)
        self.counts += np.bincount(idx, minlength=len(self.counts))
        self.low, self.high = min(self.low, float(values.min())), max(self.high, float(values.max()))

    def merge(self, other: "Histogram") -> None:
        assert np.array_equal(self.edges, other.edges), "histograms of different bins"
        self.counts += other.counts
        self.low, self.high = min(self.low, other.low), max(self.high, other.high)

    def quantile(self, q: float) -> Optional[float]:
        """The q-quantile (0 <= q <= 1) to within one bin (RESOLUTION of its value); None when empty."""
        n = self.n
        if n == 0:
            return None
        rank = min(max(q, 0.0), 1.0) * (n - 1)  # 0-based, as numpy's linear percentile
        below, frac = int(np.floor(rank)), rank - np.floor(rank)
        cum = np.cumsum(self.counts)
        at = self._value(below, cum)
        return at if frac == 0 else at + frac * (self._value(below + 1, cum) - at)

    def _value(self, k: int, cum: np.ndarray) -> float:
        """The k-th smallest value (0-based): exact for the extremes, else placed in its bin as if the bin's values
        were spread evenly across it (a bin's only value: at its middle)."""
        if k <= 0:
            return self.low
        if k >= cum[-1] - 1:
            return self.high
        b = int(np.searchsorted(cum, k, side="right"))
        before, count = (cum[b - 1] if b else 0), self.counts[b]
        lo, hi = max(self.edges[b], self.low), min(self.edges[b + 1], self.high)
        frac = (k - before) / (count - 1) if count > 1 else 0.5
        return float(lo + frac * (hi - lo))
