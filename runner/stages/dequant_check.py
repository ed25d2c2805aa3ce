"""dequant_check: is the kernel or the quantization costing quality? (GGUF artifacts)

The same GGUF file is evaluated twice on the same token windows against the same reference: by
llama.cpp (its quantized kernels: activations rounded to 8 bits for the dot products, fp16/quantized
accumulations) and by torch on the file's weights dequantized to fp32 (transformers via gguf-py,
which reads every tensor type, i-quants included). The second KLD is what the stored weights cost;
the difference is what llama.cpp's kernels add. Per-token values are paired, so the interval of the
gap comes from a bootstrap over windows (tokens inside a window are correlated, windows much less):
runner/stats/bootstrap.py's,
with evaluate's windows and eval.bootstrap, so these intervals are comparable with evaluate's.

Opt-in: add it to the stages (`stages=[quantize,evaluate,dequant_check,benchmark]`); it costs a
dequantizing load and a torch fp32 pass plus a second llama.cpp pass over the eval stream. Jobs whose
artifact is not a GGUF file log that it was skipped.
"""

import logging
import time
from typing import Optional, Tuple

import numpy as np

from runner.config.checks import bootstrap_settings
from runner.metrics import (
    QUALITY_KLD_KERNEL_GAP,
    QUALITY_KLD_MEAN_DEQUANT,
    QUALITY_PPL_DELTA_PCT_DEQUANT,
    QUALITY_PPL_DEQUANT,
    QUALITY_TOP1_AGREE_DEQUANT,
    TIME_DEQUANT_CHECK_S,
    ci_names,
)
from runner.quality import scoring as M
from runner.quality.reference import Reference, baseline_reference
from runner.stages import StageContext, StageResult
from runner.stages.evaluate import PerToken, per_token
from runner.stats.bootstrap import LEVEL, window_mean_interval

log = logging.getLogger(__name__)

# A gap inside these is "agree" even when its interval excludes 0: paired runs on the same tokens give
# tight intervals, so any rounding difference between two kernels is "significant"; it only matters
# when it is also a real share of what the quantization itself costs (fixed tolerances, not tuned).
MIN_GAP_NATS, MIN_GAP_SHARE = 1e-3, 0.10


def verdict(gap: float, gap_low: float, gap_high: float, kld_dequant: float) -> str:
    """'kernel_costs_quality' / 'kernel_gains_quality' when the gap is both significant and material, else 'agree'."""
    material = abs(gap) > max(MIN_GAP_NATS, MIN_GAP_SHARE * kld_dequant)
    if gap_low > 0 and material:
        return "kernel_costs_quality"
    if gap_high < 0 and material:
        return "kernel_gains_quality"
    return "agree"


def compare(kernel: PerToken, dequant: PerToken, ref: Reference, resamples: int, seed: int) -> Tuple[dict, str]:
    """Metrics of the dequantized run, the kernel's gap (llama.cpp KLD - dequantized KLD) with intervals, verdict."""
    gap_windows = [k - d for k, d in zip(kernel.kld, dequant.kld)]  # paired: the same windows in both runs
    kld, gap = float(np.mean(dequant.flat("kld"))), float(np.mean(np.concatenate(gap_windows)))
    ppl = M.perplexity(dequant.flat("nll"))
    metrics = {
        QUALITY_KLD_MEAN_DEQUANT: kld,
        QUALITY_KLD_KERNEL_GAP: gap,
        QUALITY_PPL_DEQUANT: ppl,
        QUALITY_PPL_DELTA_PCT_DEQUANT: 100.0 * (ppl / ref.ppl - 1.0),
        QUALITY_TOP1_AGREE_DEQUANT: float(np.mean(dequant.flat("agree"))),
    }
    metrics.update(_bounds(QUALITY_KLD_MEAN_DEQUANT, window_mean_interval(dequant.kld, resamples, seed)))
    gap_ci = window_mean_interval(gap_windows, resamples, seed)
    metrics.update(_bounds(QUALITY_KLD_KERNEL_GAP, gap_ci))
    # no interval (eval.bootstrap.resamples=0 or one window): the verdict rests on the gap's size alone
    gap_low, gap_high = gap_ci or (gap, gap)
    return metrics, verdict(gap, gap_low, gap_high, kld)


def _bounds(name: str, interval: Optional[Tuple[float, float]]) -> dict:
    """`<name>_ci_low/_high`, or nothing where there is no interval (as evaluate logs none then)."""
    return {} if interval is None else dict(zip(ci_names(name), interval))


def run(ctx: StageContext) -> StageResult:
    artifact = ctx.artifact
    assert artifact is not None, "the quantize stage runs first"
    if not any(str(f).endswith(".gguf") for f in artifact.manifest.get("weight_files", [])):
        log.info("dequant_check: %s is not a GGUF file, skipped", artifact.manifest["format"])
        return StageResult(params={"eval.dequant_check": "skipped (not a GGUF artifact)"})
    stream = ctx.stream
    start = time.perf_counter()
    ref = baseline_reference(ctx)
    cfg = ctx.cfg
    kernel = per_token(artifact, ctx.model, cfg.eval, stream, ref, cfg.hardware, "llama_cpp", "dequant_check")
    dequant = per_token(artifact, ctx.model, cfg.eval, stream, ref, cfg.hardware, "torch", "dequant_check")
    resamples, seed = bootstrap_settings(cfg.eval)  # evaluate's: the same windows, resamples and seed
    metrics, flag = compare(kernel, dequant, ref, resamples, seed)
    metrics[TIME_DEQUANT_CHECK_S] = time.perf_counter() - start
    kernel_kld = float(np.mean(kernel.flat("kld")))
    log.info(
        "dequant_check %s: KLD llama.cpp %.5f, dequantized on torch %.5f, gap %.5f [%s, %s] -> %s",
        artifact.manifest["format"],
        kernel_kld,
        metrics[QUALITY_KLD_MEAN_DEQUANT],
        metrics[QUALITY_KLD_KERNEL_GAP],
        *(metrics.get(n, "-") for n in ci_names(QUALITY_KLD_KERNEL_GAP)),
        flag,
    )
    params = {
        "eval.dequant_check": "llama_cpp vs torch fp32 on the file's dequantized weights",
        "eval.dequant_check_ci": f"{LEVEL:.0%} bootstrap over windows, evaluate's (runner/stats/bootstrap.py, "
        "{resamples} resamples, "
        f"seed {seed})",
        "eval.dequant_check_rule": f"flag when the gap's interval excludes 0 and |gap| > max({MIN_GAP_NATS} nats, "
        f"{MIN_GAP_SHARE:.0%} of the dequantized KLD)",
    }
    return StageResult(
        metrics=metrics,
        params=params,
        tags={"quality.kernel_vs_quantization": flag},
        summary={"dequant_check": {**metrics, "kld_mean_llama_cpp": kernel_kld, "verdict": flag}},
    )
