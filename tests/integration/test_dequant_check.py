"""dequant_check: a GGUF file's weights dequantized on torch vs llama.cpp's kernels, same tokens, same reference."""

import pytest


@pytest.fixture(scope="module")
def f16_check(tiny_sweep):
    """The session's tiny sweep runs the dequant_check stage on every job."""
    return tiny_sweep.by_format


def test_f16_gguf_the_two_klds_agree(f16_check):
    run = f16_check["gguf_f16"]
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    assert run.data.tags["quality.kernel_vs_quantization"] == "agree"
    # f16 weights: both runs sit on the baseline; llama.cpp's f16 kernel and torch's fp32 differ by rounding only
    assert m["quality/kld_mean_dequant"] < 1e-3 and m["quality/kld_mean"] < 1e-3
    assert m["quality/kld_kernel_gap"] == pytest.approx(m["quality/kld_mean"] - m["quality/kld_mean_dequant"], abs=1e-9)
    assert m["quality/kld_kernel_gap_ci_low"] <= m["quality/kld_kernel_gap"] <= m["quality/kld_kernel_gap_ci_high"]
    assert m["quality/ppl_dequant"] == pytest.approx(m["quality/ppl"], rel=0.005)
    assert m["quality/top1_agree_dequant"] > 0.97 and m["time/dequant_check_s"] > 0


def test_a_non_gguf_job_skips_the_check(f16_check):
    run = f16_check["fp32"]
    assert run.info.status == "FINISHED"
    assert run.data.params["eval.dequant_check"].startswith("skipped")
    assert "quality/kld_mean_dequant" not in run.data.metrics


def test_verdict_needs_a_gap_both_significant_and_material():
    from runner.stages.dequant_check import verdict

    assert verdict(0.02, 0.015, 0.025, kld_dequant=0.05) == "kernel_costs_quality"
    assert verdict(-0.02, -0.025, -0.015, kld_dequant=0.05) == "kernel_gains_quality"
    assert verdict(0.02, -0.001, 0.04, kld_dequant=0.05) == "agree"  # interval holds 0
    assert verdict(2e-4, 1e-4, 3e-4, kld_dequant=0.05) == "agree"  # significant, but immaterial
