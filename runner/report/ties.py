"""Are two runs distinguishable on a metric? The one place that decides it, from logged intervals.

A quality metric's interval is its 95 % paired bootstrap interval over scoring windows
(`<name>_ci_low` / `_ci_high`, runner/quality/bootstrap.py, logged by the evaluate stage). An offline speed's
interval is its range over the benchmark's repeats (`<name>_min` / `_max`, runner/stages/benchmark.py).
Two rows whose intervals on a metric overlap are not distinguishable on this protocol: the summary
marks them "≈" and the recommendation treats them as a tie.

Overlap of two 95 % intervals is a conservative test (it calls a tie more often than a test on the
difference would); it is what the logged numbers allow for any two runs. Compare formats by
quality/ppl_delta_pct, quality/kld_mean or quality/top1_agree, whose intervals are paired with the
baseline on the same tokens; quality/ppl's own interval mostly reflects how hard the text is, so
two formats' ppl intervals overlap nearly always.
"""

from typing import List, Optional, Tuple

from runner.metrics import CI_SUFFIXES, QUALITY_KLD_MEAN, QUALITY_PPL_DELTA_PCT

SPREAD_SUFFIXES = ("_min", "_max")  # an offline speed's range over repeats
NOISY_CV = 0.10  # benchmark.noisy_cv where a run did not log it


def ci(row, name: str) -> Optional[Tuple[float, float]]:
    """The bootstrap interval of metric `name` in row (a runner.report.data.Row), or None."""
    return _pair(row, name, CI_SUFFIXES)


def interval(row, name: str) -> Optional[Tuple[float, float]]:
    """The interval indistinguishable() compares: the bootstrap interval, else the min-max range over repeats."""
    return ci(row, name) or _pair(row, name, SPREAD_SUFFIXES)


def indistinguishable(a, b, name: str) -> bool:
    """True when rows a and b both have an interval on metric `name` and the two intervals overlap.

    False when either row lacks an interval (older runs, metrics without one): then there is no
    evidence of a tie and the caller compares the point values as before.
    """
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
