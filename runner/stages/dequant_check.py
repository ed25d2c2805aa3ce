"""dequant_check: is the kernel or the quantization costing quality? (GGUF artifacts)

The same GGUF file is evaluated twice on the same token windows against the same reference: by
llama.cpp (its quantized kernels: activations rounded to 8 bits for the dot products, fp16/quantized
accumulations) and by torch on the file's weights dequantized to fp32 (transformers via gguf-py,
which reads every tensor type, i-quants included). The second KLD is what the stored weights cost;
the difference is what llama.cpp's kernels add. Per-token values are paired, so the interval of the
gap comes from a bootstrap over windows (tokens inside a window are correlated, windows much less).

Opt-in: add it to the stages (`stages=[quantize,evaluate,dequant_check,benchmark]`); it costs a
dequantizing load and a torch fp32 pass plus a second llama.cpp pass over the eval stream. Jobs whose
artifact is not a GGUF file log that it was skipped.
"""
import logging
import time
from typing import List, Tuple

import numpy as np

from runner.stages import StageContext, StageResult
from runner.stages import quality_math as M
from runner.stages.evaluate import PerToken, per_token
from runner.stages.reference import Reference, baseline_reference
from runner.stats import LEVEL, resample_counts

log = logging.getLogger(__name__)

DEFAULT_RESAMPLES, DEFAULT_SEED = 1000, 0  # when the eval config has no `bootstrap` group
# A gap inside these is "agree" even when its interval excludes 0: paired runs on the same tokens give
# tight intervals, so any rounding difference between two kernels is "significant"; it only matters
# when it is also a real share of what the quantization itself costs (fixed tolerances, not tuned).
MIN_GAP_NATS, MIN_GAP_SHARE = 1e-3, 0.10


def window_bootstrap(per_window: List[np.ndarray], resamples: int, seed: int) -> Tuple[float, float, float]:
    """Token mean and its percentile interval, resampling whole windows as runner/stats.py does for evaluate
    (resampled sums and counts, so windows of unequal length weigh as their tokens do)."""
    sums = np.array([w.sum() for w in per_window], dtype=np.float64)
    counts = np.array([len(w) for w in per_window], dtype=np.float64)
    mean = float(sums.sum() / counts.sum())
    if len(per_window) < 2 or resamples < 1:
        return mean, mean, mean
    draws = resample_counts(len(per_window), resamples, seed)
    boot = (draws @ sums) / (draws @ counts)
    tail = 100.0 * (1.0 - LEVEL) / 2.0
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    return mean, float(low), float(high)


def verdict(gap: float, gap_low: float, gap_high: float, kld_dequant: float) -> str:
    """'kernel_costs_quality' / 'kernel_gains_quality' when the gap is both significant and material, else 'agree'."""
    material = abs(gap) > max(MIN_GAP_NATS, MIN_GAP_SHARE * kld_dequant)
    if gap_low > 0 and material:
        return "kernel_costs_quality"
    if gap_high < 0 and material:
        return "kernel_gains_quality"
    return "agree"


def compare(kernel: PerToken, dequant: PerToken, ref: Reference, resamples: int, seed: int) -> Tuple[dict, str]:
    """Metrics of the dequantized run, the kernel's gap (llama.cpp KLD - dequantized KLD) with intervals, the verdict."""
    kld, kld_low, kld_high = window_bootstrap(dequant.kld, resamples, seed)
    gap_windows = [k - d for k, d in zip(kernel.kld, dequant.kld)]  # paired: the same windows in both runs
    gap, gap_low, gap_high = window_bootstrap(gap_windows, resamples, seed)
    ppl = M.perplexity(dequant.flat("nll"))
    metrics = {
        "quality/kld_mean_dequant": kld, "quality/kld_mean_dequant_ci_low": kld_low, "quality/kld_mean_dequant_ci_high": kld_high,
        "quality/kld_kernel_gap": gap, "quality/kld_kernel_gap_ci_low": gap_low, "quality/kld_kernel_gap_ci_high": gap_high,
        "quality/ppl_dequant": ppl, "quality/ppl_delta_pct_dequant": 100.0 * (ppl / ref.ppl - 1.0),
        "quality/top1_agree_dequant": float(np.mean(dequant.flat("agree"))),
    }
    return metrics, verdict(gap, gap_low, gap_high, kld)


def run(ctx: StageContext) -> StageResult:
    artifact = ctx.artifact
    if not any(str(f).endswith(".gguf") for f in artifact.manifest.get("weight_files", [])):
        log.info("dequant_check: %s is not a GGUF file, skipped", artifact.manifest["format"])
        return StageResult(params={"eval.dequant_check": "skipped (not a GGUF artifact)"})
    stream = ctx.stream
    start = time.perf_counter()
    ref = baseline_reference(ctx)
    cfg = ctx.cfg
    kernel = per_token(artifact, ctx.model, cfg.eval, stream, ref, cfg.hardware, "llama_cpp", "dequant_check")
    dequant = per_token(artifact, ctx.model, cfg.eval, stream, ref, cfg.hardware, "torch", "dequant_check")
    boot = cfg.eval.get("bootstrap") or {}
    resamples, seed = int(boot.get("resamples", DEFAULT_RESAMPLES)), int(boot.get("seed", DEFAULT_SEED))
    metrics, flag = compare(kernel, dequant, ref, resamples, seed)
    metrics["time/dequant_check_s"] = time.perf_counter() - start
    kernel_kld = float(np.mean(kernel.flat("kld")))
    log.info("dequant_check %s: KLD llama.cpp %.5f, dequantized on torch %.5f, gap %.5f [%.5f, %.5f] -> %s",
             artifact.manifest["format"], kernel_kld, metrics["quality/kld_mean_dequant"], metrics["quality/kld_kernel_gap"],
             metrics["quality/kld_kernel_gap_ci_low"], metrics["quality/kld_kernel_gap_ci_high"], flag)
    params = {"eval.dequant_check": "llama_cpp vs torch fp32 on the file's dequantized weights",
              "eval.dequant_check_ci": f"{LEVEL:.0%} bootstrap over windows ({resamples} resamples, seed {seed})",
              "eval.dequant_check_rule": f"flag when the gap's interval excludes 0 and |gap| > max({MIN_GAP_NATS} nats, "
                                         f"{MIN_GAP_SHARE:.0%} of the dequantized KLD)"}
    return StageResult(metrics=metrics, params=params, tags={"quality.kernel_vs_quantization": flag},
                       summary={"dequant_check": {**metrics, "kld_mean_llama_cpp": kernel_kld, "verdict": flag}})
