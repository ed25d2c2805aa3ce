"""One bootstrap (runner/stats/bootstrap.py): dequant_check's intervals are evaluate's resampling of the same
windows."""

import inspect

import numpy as np
import pytest

from runner.quality.reference import Reference
from runner.stages import dequant_check
from runner.stages.evaluate import PerToken
from runner.stats.bootstrap import WindowSums, quality_intervals, window_mean_interval


def windows(rng, sizes, scale):
    return [rng.gamma(0.5, scale, size=n) for n in sizes]


def per_token(kld_windows, rng):
    return PerToken(
        nll=[rng.gamma(2.0, 1.5, size=len(w)) for w in kld_windows],
        kld=kld_windows,
        agree=[rng.random(len(w)) < 0.9 for w in kld_windows],
    )


def test_dequant_check_kld_interval_is_evaluates_for_the_same_windows():
    rng = np.random.default_rng(3)
    sizes = [128] * 20 + [37, 0, 90]  # uneven and one empty window: both sides must see the same units
    kernel, dequant = per_token(windows(rng, sizes, 0.02), rng), per_token(windows(rng, sizes, 0.015), rng)
    ref = Reference(
        nll=np.concatenate(dequant.nll) * 0.98,
        top_ids=None,
        top_logprobs=None,
        baseline="fp32",
        artifact_key="fp32-key",
        engine="torch",
    )
    metrics, _ = dequant_check.compare(kernel, dequant, ref, resamples=400, seed=5)

    # what evaluate logs for a run whose per-token arrays are the dequantized run's
    evaluated = quality_intervals(
        WindowSums.from_tokens(sizes, dequant.flat("nll"), dequant.flat("kld"), dequant.flat("agree"), ref.nll), 400, 5
    )
    # the same draws and ratios; only the matmul's summation order may differ (one column vs five)
    assert metrics["quality/kld_mean_dequant_ci_low"] == pytest.approx(evaluated["quality/kld_mean_ci_low"], rel=1e-12)
    assert metrics["quality/kld_mean_dequant_ci_high"] == pytest.approx(
        evaluated["quality/kld_mean_ci_high"], rel=1e-12
    )
    assert metrics["quality/kld_mean_dequant"] == pytest.approx(float(np.mean(dequant.flat("kld"))))

    # the gap is paired: the interval of per-token differences, resampled with the same windows
    gap = window_mean_interval([k - d for k, d in zip(kernel.kld, dequant.kld)], 400, 5)
    assert (metrics["quality/kld_kernel_gap_ci_low"], metrics["quality/kld_kernel_gap_ci_high"]) == gap
    assert metrics["quality/kld_kernel_gap"] == pytest.approx(
        np.mean(kernel.flat("kld")) - np.mean(dequant.flat("kld"))
    )


def test_dequant_check_has_no_resampler_of_its_own():
    source = inspect.getsource(dequant_check)
    assert not hasattr(dequant_check, "window_bootstrap")
    for own in ("resample_counts", "np.percentile", "default_rng", "rng.integers"):
        assert own not in source, f"dequant_check resamples by itself ({own}): use runner/stats/bootstrap.py"


def test_window_mean_interval_weighs_windows_by_their_tokens():
    per_window = [np.full(100, 1.0), np.full(10, 0.0), np.full(100, 1.0), np.full(10, 0.0)]
    low, high = window_mean_interval(per_window, resamples=500, seed=0)
    assert low <= 200 / 220 <= high and low < high
    assert window_mean_interval(per_window, 500, 0) == window_mean_interval(per_window, 500, 0)
    # no spread to resample, or resampling off: no interval (evaluate logs none either)
    assert (
        window_mean_interval([np.ones(5)], 500, 0) is None
        and window_mean_interval([np.ones(5), np.array([])], 500, 0) is None
    )
    assert window_mean_interval(per_window, 0, 0) is None


def test_no_interval_logs_no_bounds_and_the_verdict_rests_on_size():
    kernel = PerToken(nll=[np.ones(50)], kld=[np.full(50, 0.05)], agree=[np.ones(50, bool)])
    dequant = PerToken(nll=[np.ones(50)], kld=[np.full(50, 0.01)], agree=[np.ones(50, bool)])
    ref = Reference(
        nll=np.ones(50), top_ids=None, top_logprobs=None, baseline="fp32", artifact_key="fp32-key", engine="torch"
    )
    metrics, flag = dequant_check.compare(kernel, dequant, ref, resamples=1000, seed=0)  # one window
    assert not [k for k in metrics if "_ci_" in k]
    assert metrics["quality/kld_kernel_gap"] == pytest.approx(0.04) and flag == "kernel_costs_quality"
