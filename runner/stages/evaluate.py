"""evaluate(artifact) -> quality metrics on one fixed token stream shared by every engine.

The stream (runner/quality/stream.py) is the eval corpus tokenized once by the base model's tokenizer;
the baseline's top-k log-probs on its windows come from runner/quality/reference.py. As a stage (run):
builds both on first use, evaluates the job's artifact on the job's engine, logs the protocol.
"""

import gc
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from tqdm import tqdm

from runner.cache import Cache
from runner.config.checks import bootstrap_settings
from runner.engines import get_engine
from runner.metrics import (
    QUALITY_BASELINE_PPL,
    QUALITY_KLD_MEAN,
    QUALITY_PPL,
    QUALITY_PPL_DELTA_PCT,
    QUALITY_PPL_RATIO,
    QUALITY_TOP1_AGREE,
    TIME_BOOTSTRAP_S,
    TIME_EVALUATE_S,
)
from runner.paths import WINDOW_SUMS_ARTIFACT
from runner.quality import scoring as M
from runner.quality.distribution import TokenDistribution, delta_p
from runner.quality.reference import Reference, baseline_reference
from runner.quality.stream import TokenStream, iter_windows, protocol, uses_bos, windows_key
from runner.stages import StageContext, StageResult
from runner.stats.bootstrap import WindowSums, quality_intervals
from runner.system.environment import code_identity


def run(ctx: StageContext) -> StageResult:
    resamples, seed = bootstrap_settings(ctx.cfg.eval)  # bad input fails before any model work
    stream = ctx.stream  # before the clock: the stream is shared with the benchmark stage
    start = time.perf_counter()
    ref = baseline_reference(ctx)
    quality, sums, hit = _scored(ctx, stream, ref)
    if not hit:
        quality[TIME_EVALUATE_S] = time.perf_counter() - start  # a reused evaluation keeps the time it took
    params = {
        **protocol(ctx.cfg.eval, stream),
        "eval.baseline_engine": ref.engine,
        "eval.logprobs": "full" if ctx.engine.LOGPROBS_TOP_K is None else f"top-{ctx.engine.LOGPROBS_TOP_K}",
        "eval.bootstrap.windows": len(window_sizes(stream, ctx.cfg.eval)),
        "eval.bootstrap.resamples": resamples,
        "eval.bootstrap.seed": seed,
    }
    sums.protocol = {
        **{k: str(v) for k, v in params.items() if k.startswith("eval.") and k not in PER_RUN},
        "eval.baseline_artifact": ref.artifact_key,
    }
    path = ctx.run_dir / WINDOW_SUMS_ARTIFACT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(sums.to_json())
    return StageResult(
        metrics=quality,
        params=params,
        tags={"cache.evaluation": "hit" if hit else "miss"},
        summary={"quality": quality},
        files=[(path, str(Path(WINDOW_SUMS_ARTIFACT).parent))],
    )


def _scored(ctx: StageContext, stream: TokenStream, ref: Reference) -> Tuple[Dict[str, float], WindowSums, bool]:
    """The job's evaluation, cached per (artifact, engine and its version, device kind, windows, reference, runner
    code): a job re-run on another host (another CPU model, other flags) re-measures its speed, not its quality."""
    cfg, artifact = ctx.cfg, ctx.artifact
    assert artifact is not None, "the quantize stage runs first"
    key = Cache.key(
        "evaluation",
        artifact.manifest["key"],
        ctx.engine.NAME,
        ctx.engine.version(),
        cfg.hardware.device,
        stream.key,
        cfg.eval.ctx_len,
        cfg.eval.stride,
        uses_bos(stream, cfg.eval),
        cfg.eval.kld_topk,
        *windows_key(cfg.eval),
        bootstrap_settings(cfg.eval),
        ref.artifact_key,
        ref.engine,
        code_identity(),
    )
    built = []

    def build(folder: Path) -> None:
        start = time.perf_counter()
        quality, sums = evaluate(artifact, ctx.model, cfg.eval, stream, ref, cfg.hardware, ctx.engine.NAME)
        quality[TIME_EVALUATE_S] = time.perf_counter() - start
        (folder / "quality.json").write_text(json.dumps(quality))
        (folder / "window_sums.json").write_text(sums.to_json())
        built.append(True)

    label = f"{artifact.manifest['format']} on {ctx.engine.NAME}"
    entry = ctx.cache.get_or_build("evaluations", key, build, label=label)
    quality = json.loads((entry / "quality.json").read_text())
    return quality, WindowSums.from_json((entry / "window_sums.json").read_text()), not built


# params of the evaluate stage that differ between runs scored on the same windows: left out of the windows' identity
PER_RUN = ("eval.logprobs", "eval.bootstrap.resamples", "eval.bootstrap.seed")


def window_sizes(stream: TokenStream, eval_cfg) -> list:
    """Scored tokens per window, in scoring order: the bootstrap's units (runner/stats/bootstrap.py)."""
    return [len(rows) for _, rows, _ in iter_windows(stream, eval_cfg)]


@dataclass
class PerToken:
    """Per-window arrays of one engine's run: NLL, KLD vs the reference, top-1 agreement, Δp; and the distribution of
    KLD and Δp, accumulated window by window (percentiles without sorting every token)."""

    nll: List[np.ndarray]
    kld: List[np.ndarray]
    agree: List[np.ndarray]
    dp: List[np.ndarray] = field(default_factory=list)
    dist: TokenDistribution = field(default_factory=TokenDistribution)

    def add(self, nll: np.ndarray, kld: np.ndarray, agree: np.ndarray, ref: Reference, sl: slice) -> None:
        """One window's tokens, at `sl` of the reference's scored tokens."""
        dp = delta_p(nll, ref.nll[sl])
        self.nll.append(nll)
        self.kld.append(kld)
        self.agree.append(agree)
        self.dp.append(dp)
        self.dist.add(kld, dp, np.exp(ref.top_logprobs[sl, 0].astype(np.float64)))

    def flat(self, name: str) -> np.ndarray:
        return np.concatenate(getattr(self, name))


def per_token(
    artifact, model, eval_cfg, stream: TokenStream, ref: Reference, hardware, engine: str, label: str
) -> PerToken:
    """`artifact` scored on `engine` window by window against the reference (evaluate, dequant_check)."""
    windows = list(iter_windows(stream, eval_cfg))
    # the longest window and the one position an engine may generate after it (vLLM's last row)
    context = max((len(inputs) for inputs, _, _ in windows), default=0) + 1
    loaded = get_engine(engine).load(artifact, model, hardware, context_tokens=context)
    out, pos = PerToken([], [], []), 0
    # an engine may score several windows at once (torch: fp16 on a CPU without oneDNN fp16, ~15 % faster)
    scored = loaded.logprobs_many(inputs for inputs, _, _ in windows)
    try:
        for (_, rows, targets), lp in tqdm(
            zip(windows, scored),
            total=len(windows),
            unit="win",
            desc=f"{label} ({artifact.manifest['format']} on {engine})",
        ):
            lp = lp[rows]
            sl = slice(pos, pos + len(rows))
            kld = M.kld_topk(ref.top_ids[sl], ref.top_logprobs[sl], lp)
            out.add(M.token_nll(lp, targets), kld, M.top1_agreement(ref.top_ids[sl, 0], lp), ref, sl)
            pos += len(rows)
    finally:
        scored.close()  # stops and waits for windows still being scored before the model goes
        loaded.close()
        gc.collect()
    return out


def evaluate(
    artifact, model, eval_cfg, stream: TokenStream, ref: Reference, hardware, engine: str
) -> Tuple[Dict[str, float], WindowSums]:
    """Quality of `artifact` run on `engine` (the job's format.engine, never the artifact's first user's), and the
    per-window sums behind its intervals (the run's artifact: the report compares two formats on them)."""
    sizes = window_sizes(stream, eval_cfg)
    if artifact.manifest["key"] == ref.artifact_key and engine == ref.engine:  # the baseline itself
        scored = PerToken([], [], [])
        for sl in (slice(a, a + n) for a, n in zip(np.cumsum([0, *sizes[:-1]]), sizes)):
            n = sl.stop - sl.start
            scored.add(ref.nll[sl], np.zeros(n), np.ones(n, dtype=bool), ref, sl)
    else:
        scored = per_token(artifact, model, eval_cfg, stream, ref, hardware, engine, "evaluate")
    nll, kld, agree, dp = (scored.flat(name) for name in ("nll", "kld", "agree", "dp"))
    ppl = M.perplexity(nll)
    quality = {
        QUALITY_PPL: ppl,
        QUALITY_BASELINE_PPL: ref.ppl,
        QUALITY_PPL_DELTA_PCT: 100.0 * (ppl / ref.ppl - 1.0),
        QUALITY_PPL_RATIO: ppl / ref.ppl,
        QUALITY_KLD_MEAN: float(np.mean(kld)),
        QUALITY_TOP1_AGREE: float(np.mean(agree)),
        **scored.dist.metrics(),  # KLD percentiles (quality/kld_p99 among them), Δp, KLD by baseline confidence
    }
    start = time.perf_counter()
    resamples, seed = bootstrap_settings(eval_cfg)
    sums = WindowSums.from_tokens(sizes, nll, kld, agree, ref.nll, dp)
    sums.resamples, sums.seed = resamples, seed
    quality.update(quality_intervals(sums, resamples, seed))
    quality[TIME_BOOTSTRAP_S] = time.perf_counter() - start
    return quality, sums
