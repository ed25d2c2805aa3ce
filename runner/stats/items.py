"""A format's task answers against the baseline's on the same items: flips, the accuracy difference and the share of
the baseline's accuracy kept, each with a paired bootstrap interval over items (pure numpy).

Flips (Dutta et al., 2024, "Accuracy is not all you need"): the share of items the baseline answers correctly and the
format does not (correct→incorrect), and the reverse (incorrect→correct). Two formats can have the same accuracy while
many answers changed, because the two kinds of flip cancel in the accuracy; the flips show it.

The unit resampled is the item: one resample of item indices is applied to both sides (a paired bootstrap), so an
item's difficulty sits in both and cancels. The interval is the expanded percentile interval of
runner/stats/bootstrap.py (Hesterberg, 2015), the one the quality metrics use.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from runner.metrics import ci_names
from runner.stats.bootstrap import percentile_interval, resample_counts

Interval = Optional[Tuple[float, float]]
# acc ÷ the baseline's acc has no value in a resample where the baseline answers no item right: such draws are left
# out while they are rarer than one tail of the interval (2.5 %), else the ratio gets no interval
MIN_DEFINED = 0.975


@dataclass(frozen=True)
class PairedItems:
    """Each statistic of a format's items against the baseline's, as (value, interval); interval None where it
    cannot be drawn (fewer than 2 items, resamples 0, or for retained: too many resamples where the baseline is never
    right, MIN_DEFINED)."""

    n: int
    acc: float
    baseline_acc: float
    acc_delta: Tuple[float, Interval]  # acc - baseline acc
    retained: Tuple[float, Interval]  # acc / baseline acc (nan when the baseline is never right)
    correct_to_incorrect: Tuple[float, Interval]  # share of items: baseline right, format wrong
    incorrect_to_correct: Tuple[float, Interval]  # share of items: baseline wrong, format right
    flips: Tuple[float, Interval]  # share of items whose correctness differs (the sum of the two)


def correct(items: Sequence[float]) -> np.ndarray:
    """Per-item correctness as 0/1 floats; lm-eval's per-item acc is 1.0 or 0.0."""
    a = np.asarray(items, dtype=np.float64)
    if not np.all((a == 0.0) | (a == 1.0)):
        raise ValueError("per-item accuracies must be 0 or 1 to count flips")
    return a


def paired_items(items: Sequence[float], baseline: Sequence[float], resamples: int, seed: int) -> PairedItems:
    """Flips, acc − baseline acc and acc ÷ baseline acc of `items` against `baseline`, the same items in the same
    order (ValueError otherwise), with paired bootstrap intervals (eval.bootstrap's resamples and seed)."""
    x, b = correct(items), correct(baseline)
    if len(x) != len(b) or len(x) == 0:
        raise ValueError(f"{len(x)} items against the baseline's {len(b)}: not the same items")
    n = len(x)
    sums = {
        "x": x,
        "b": b,
        "c2i": b * (1.0 - x),
        "i2c": (1.0 - b) * x,
    }
    point = {k: np.asarray([v.sum()]) for k, v in sums.items()}
    draws = None
    if n >= 2 and resamples >= 1:
        counts = resample_counts(n, resamples, seed)
        draws = {k: counts @ v for k, v in sums.items()}

    def stat(f) -> Tuple[float, Interval]:
        value = float(f(point)[0])
        if draws is None:
            return value, None
        values = f(draws)
        defined = values[np.isfinite(values)]
        if len(defined) < MIN_DEFINED * len(values):
            return value, None
        return value, percentile_interval(defined, n)

    with np.errstate(divide="ignore", invalid="ignore"):
        return PairedItems(
            n=n,
            acc=float(x.mean()),
            baseline_acc=float(b.mean()),
            acc_delta=stat(lambda s: (s["x"] - s["b"]) / n),
            retained=stat(lambda s: np.where(s["b"] > 0, s["x"] / np.where(s["b"] > 0, s["b"], 1.0), np.nan)),
            correct_to_incorrect=stat(lambda s: s["c2i"] / n),
            incorrect_to_correct=stat(lambda s: s["i2c"] / n),
            flips=stat(lambda s: (s["c2i"] + s["i2c"]) / n),
        )


def as_metrics(p: PairedItems, names: Dict[str, str]) -> Dict[str, float]:
    """{metric name: value, and its `_ci_low` / `_ci_high` where it has an interval}, for the fields in `names`
    (field -> metric name); a nan value (no baseline accuracy to divide by) is left out."""
    out: Dict[str, float] = {}
    for field_name, metric in names.items():
        value, interval = getattr(p, field_name)
        if not np.isfinite(value):
            continue
        out[metric] = value
        if interval is not None:
            low, high = ci_names(metric)
            out[low], out[high] = interval
    return out
