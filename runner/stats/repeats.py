"""A speed measured over repeats: its spread and the interval of its mean (independent repeats, no pairing).

Two runs' repeats are independent measurements, so the difference of two speeds has the interval
mean_a − mean_b ± √(h_a² + h_b²) from each run's half-width h (difference_interval): tighter than the
overlap of the two intervals (whose half-widths add), and still the sum of two independent errors.
"""

import math
from typing import Dict, Optional, Tuple

import numpy as np

LEVEL = 0.95


def spread(values) -> Dict[str, float]:
    """min, max and coefficient of variation (sample std / mean) of repeated measurements; {} for < 2 values."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return {}
    mean = float(np.mean(v))
    return {"min": float(np.min(v)), "max": float(np.max(v)), "cv": float(np.std(v, ddof=1) / mean) if mean else 0.0}


def mean_interval(values) -> Optional[Tuple[float, float]]:
    """The LEVEL Student-t interval of the mean of repeated measurements; None for fewer than 2."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return None
    half = float(t.ppf(0.5 + LEVEL / 2.0, len(v) - 1)) * float(np.std(v, ddof=1)) / math.sqrt(len(v))
    mean = float(np.mean(v))
    return mean - half, mean + half


def difference_interval(a: Tuple[float, float], b: Tuple[float, float]) -> Tuple[float, float, float]:
    """(centre_a − centre_b, low, high) from two independent intervals of the mean (mean_interval's)."""
    centre = (a[0] + a[1]) / 2.0 - (b[0] + b[1]) / 2.0
    half = math.hypot((a[1] - a[0]) / 2.0, (b[1] - b[0]) / 2.0)
    return centre, centre - half, centre + half
