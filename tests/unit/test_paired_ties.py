"""Two formats are "the same" only when the interval of their difference says so: paired over the same windows for
quality, from independent repeats for offline speeds; intervals honest for few windows."""

import numpy as np
import pytest

from runner.paths import WINDOW_SUMS_ARTIFACT
from runner.report import ties
from runner.report.columns import SUMMARY, cells
from runner.report.data import Row
from runner.stats.bootstrap import WindowSums, paired_difference, quality_intervals, resample_counts

KLD = "quality/kld_mean"
PROTOCOL = {"eval.corpus": "shakespeare", "eval.ctx_len": "512", "eval.baseline_artifact": "base"}


def window_sums(kld_per_window, tokens=100, protocol=PROTOCOL):
    n = len(kld_per_window)
    tok = np.full(n, float(tokens))
    nll = np.full(n, 3.0 * tokens)
    return WindowSums(nll, tok, np.asarray(kld_per_window) * tokens, 0.9 * tok, nll.copy(), dict(protocol), 1000, 0)


def row_with(tmp_path, name, sums):
    """A Row as the report reads it back: its logged intervals, and its window sums as the run's artifact file."""
    root = tmp_path / name
    (root / WINDOW_SUMS_ARTIFACT).parent.mkdir(parents=True)
    (root / WINDOW_SUMS_ARTIFACT).write_text(sums.to_json())
    kld = float(sums.kld.sum() / sums.tokens.sum())
    ci = quality_intervals(sums, sums.resamples, sums.seed)
    metrics = {KLD: kld, KLD + "_ci_low": ci[KLD + "_ci_low"], KLD + "_ci_high": ci[KLD + "_ci_high"]}
    return Row(name, "FINISHED", {"format.name": name}, metrics, artifact_uri=root.as_uri())


def correlated_pair():
    """Windows of very different difficulty (the same in both formats); b is a worse everywhere by a small shift."""
    difficulty = np.random.default_rng(5).uniform(0.01, 0.2, 40)
    return window_sums(difficulty), window_sums(difficulty + 0.004)


def test_paired_rule_separates_a_correlated_shifted_pair_that_overlap_calls_tied(tmp_path):
    a_sums, b_sums = correlated_pair()
    a, b = row_with(tmp_path, "a", a_sums), row_with(tmp_path, "b", b_sums)
    ia, ib = ties.ci(a, KLD), ties.ci(b, KLD)
    assert ia[0] <= ib[1] and ib[0] <= ia[1]  # the two intervals overlap widely: the text's spread is in both
    point, low, high, how = ties.difference(a, b, KLD)
    assert how == ties.PAIRED and point == pytest.approx(-0.004) and low == pytest.approx(high) == pytest.approx(-0.004)
    assert not ties.indistinguishable(a, b, KLD)
    kld = next(c for c in SUMMARY if c.metric == KLD)
    assert not any(cell.startswith("≈") for (cell,) in cells([kld], [a, b]))  # the summary agrees


def test_a_pair_whose_difference_straddles_zero_is_a_tie_and_identical_runs_are_exactly_tied(tmp_path):
    a_sums, _ = correlated_pair()
    noise = np.random.default_rng(6).normal(0, 0.003, 40)
    a, b = row_with(tmp_path, "a", a_sums), row_with(tmp_path, "b", window_sums(a_sums.kld / 100 + noise))
    assert ties.indistinguishable(a, b, KLD) and ties.comparison(a, b, KLD) == ties.PAIRED
    assert ties.difference(a, a, KLD) == (0.0, 0.0, 0.0, ties.PAIRED)


def test_runs_scored_on_other_windows_are_not_paired_and_fall_back_to_the_overlap(tmp_path):
    a_sums, b_sums = correlated_pair()
    other = window_sums(b_sums.kld / 100, protocol={**PROTOCOL, "eval.ctx_len": "256"})
    a, b = row_with(tmp_path, "a", a_sums), row_with(tmp_path, "b", other)
    assert paired_difference(a_sums, other, KLD) is None and ties.difference(a, b, KLD) is None
    assert ties.comparison(a, b, KLD) == ties.OVERLAP and ties.indistinguishable(a, b, KLD)
    shorter = window_sums(b_sums.kld[:39] / 100)
    assert paired_difference(a_sums, shorter, KLD) is None  # not the same windows either


def test_a_missing_or_unreadable_artifact_leaves_the_logged_intervals(tmp_path):
    row = Row("r", "FINISHED", {}, {KLD: 0.01}, artifact_uri=(tmp_path / "none").as_uri())
    assert row.window_sums is None
    (tmp_path / "bad" / "quality").mkdir(parents=True)
    (tmp_path / "bad" / WINDOW_SUMS_ARTIFACT).write_text("{not json")
    assert Row("s", "FINISHED", {}, {}, artifact_uri=(tmp_path / "bad").as_uri()).window_sums is None


def test_window_sums_round_trip_through_the_artifact_json():
    a, _ = correlated_pair()
    back = WindowSums.from_json(a.to_json())
    assert back.pairs_with(a) and back.resamples == 1000 and np.array_equal(back.kld, a.kld)


def test_the_interval_of_a_mean_over_8_windows_covers_what_it_says():
    """Normal windows, true mean 0: the plain 2.5-97.5 percentile interval of 8 units covers ~88 %; the expanded
    interval that quality_intervals logs covers close to its nominal 95 %."""
    rng, n, trials = np.random.default_rng(0), 8, 400
    counts = resample_counts(n, 1000, 0)
    plain = expanded = 0
    for _ in range(trials):
        x = rng.normal(0.0, 1.0, n)
        low, high = np.percentile(counts @ x / n, [2.5, 97.5])
        plain += low <= 0.0 <= high
        ci = quality_intervals(window_sums(x, tokens=1), 1000, 0)
        expanded += ci[KLD + "_ci_low"] <= 0.0 <= ci[KLD + "_ci_high"]
    assert plain / trials < 0.91 and expanded / trials >= 0.92


def test_offline_speeds_are_told_apart_by_the_interval_of_their_difference():
    """Two independent t intervals that overlap, [10, 12] and [11.6, 13.6]: the difference -1.6 has half-width
    √2 = 1.41 (not 1 + 1), so the two speeds differ."""
    speed = "perf/decode_tok_s"
    a = Row("a", "FINISHED", {}, {speed: 11.0, speed + "_ci_low": 10.0, speed + "_ci_high": 12.0})
    b = Row("b", "FINISHED", {}, {speed: 12.6, speed + "_ci_low": 11.6, speed + "_ci_high": 13.6})
    point, low, high, how = ties.difference(a, b, speed)
    assert how == ties.INDEPENDENT and point == pytest.approx(-1.6) and high == pytest.approx(-1.6 + 2**0.5)
    assert not ties.indistinguishable(a, b, speed)
    c = Row("c", "FINISHED", {}, {speed: 12.0, speed + "_ci_low": 11.0, speed + "_ci_high": 13.0})
    assert ties.indistinguishable(a, c, speed)
