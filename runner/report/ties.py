"""Are two runs distinguishable on a metric? The one place that decides it.

- Quality (Δppl, KLD, top-1, ppl): two runs scored on the same windows against the same baseline are
  compared by the 95 % paired bootstrap interval of their difference (runner/stats/bootstrap.py
  paired_difference, from each run's window sums artifact): "≈" when it contains 0. The windows'
  difficulty sits in both runs and cancels, which the overlap of their two intervals does not do.
- Offline speeds: each run logs the 95 % t interval of the speed's mean over its repeats (`<name>_ci_low`
  / `_ci_high`, runner/stages/benchmark.py); two runs' repeats are independent, so the difference of the
  means has the half-width √(h_a² + h_b²) (runner/stats/repeats.py difference_interval).
- Otherwise (runs scored on other windows, runs from before the artifact, task accuracies): the two logged
  intervals overlap -- a conservative test, it calls a tie more often than a test on the difference would
  -- and older speeds' min-max ranges over repeats overlap.

quality/ppl's own interval mostly reflects how hard the text is; compare formats by Δppl, KLD or top-1.
"""

from typing import List, Optional, Tuple

from runner import metrics as M
from runner.metrics import CI_SUFFIXES, QUALITY_KLD_MEAN, QUALITY_PPL_DELTA_PCT
from runner.stats.bootstrap import STATISTICS, paired_difference
from runner.stats.repeats import difference_interval

SPREAD_SUFFIXES = ("_min", "_max")  # an offline speed's range over repeats (runs from before its t interval)
NOISY_CV = 0.10  # benchmark.noisy_cv where a run did not log it
PAIRED, INDEPENDENT, OVERLAP = "paired", "independent", "overlap"


def ci(row, name: str) -> Optional[Tuple[float, float]]:
    """The logged 95 % interval of metric `name` in row (a runner.report.data.Row), or None."""
    return _pair(row, name, CI_SUFFIXES)


def interval(row, name: str) -> Optional[Tuple[float, float]]:
    """The interval the overlap rule compares: the logged interval, else the min-max range over repeats."""
    return ci(row, name) or _pair(row, name, SPREAD_SUFFIXES)


def difference(a, b, name: str) -> Optional[Tuple[float, float, float, str]]:
    """(a − b, low, high, how) on metric `name`: paired over the same windows for a quality metric, from the two
    runs' independent repeat intervals for an offline speed; None when neither can be computed."""
    wa, wb = getattr(a, "window_sums", None), getattr(b, "window_sums", None)
    if name in STATISTICS and wa is not None and wb is not None:
        d = paired_difference(wa, wb, name)
        if d is not None:
            return (*d, PAIRED)
    if M.get(name).producer == M.OFFLINE:
        ia, ib = ci(a, name), ci(b, name)
        if ia is not None and ib is not None:
            return (*difference_interval(ia, ib), INDEPENDENT)
    return None


def comparison(a, b, name: str) -> Optional[str]:
    """How indistinguishable() decides for this pair: PAIRED, INDEPENDENT, OVERLAP, or None (no evidence)."""
    d = difference(a, b, name)
    if d is not None:
        return d[3]
    return OVERLAP if interval(a, name) is not None and interval(b, name) is not None else None


def indistinguishable(a, b, name: str) -> bool:
    """True when the interval of the difference a − b on `name` contains 0 (difference()); where no difference
    can be computed, when both rows have an interval and the two overlap. False without intervals: then there
    is no evidence of a tie and the caller compares the point values."""
    d = difference(a, b, name)
    if d is not None:
        return d[1] <= 0.0 <= d[2]
    ia, ib = interval(a, name), interval(b, name)
    if ia is None or ib is None:
        return False
    return ia[0] <= ib[1] and ib[0] <= ia[1]


def noisy(row, name: str) -> bool:
    """Did speed `name` vary over the repeats by more than the run's benchmark.noisy_cv (its `<name>_cv`)?"""
    cv = row.get(name + "_cv")
    return cv is not None and cv > noisy_threshold(row)


def noisy_threshold(row) -> float:
    value = row.params.get("benchmark.noisy_cv")
    return NOISY_CV if value in (None, "None") else float(value)


def quality_key(row) -> Tuple[float, float]:
    """Sort key, best quality first: KLD vs the baseline, then Δppl; a missing metric sorts last."""
    kld, delta = row.get(QUALITY_KLD_MEAN), row.get(QUALITY_PPL_DELTA_PCT)
    return (float("inf") if kld is None else kld, float("inf") if delta is None else delta)


def quality_order(rows: List) -> List:
    """Best quality first (quality_key); rows without quality metrics keep their order, last (a stable sort)."""
    return sorted(rows, key=quality_key)


def _pair(row, name: str, suffixes) -> Optional[Tuple[float, float]]:
    low, high = row.get(name + suffixes[0]), row.get(name + suffixes[1])
    if low is None or high is None:
        return None
    return (min(low, high), max(low, high))
