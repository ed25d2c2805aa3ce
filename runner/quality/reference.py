"""The baseline's top-k log-probs on the eval windows: what KL-divergence and top-1 agreement compare to.

Computed once per (baseline artifact, its dtype, engine, token stream, protocol) and cached (its size bound:
runner/quality/scoring.py). The baseline is the eval.baseline preset as resolved for the model and the hardware
profile (runner/config/baseline.py: auto is the model's own dtype on CUDA, fp32 on the CPU), quantized (or found in
the cache) like any artifact and run on that preset's own format.engine.
"""

import json
from dataclasses import dataclass
from typing import Optional

import numpy as np
from tqdm import tqdm

from runner.cache import Cache
from runner.engines import get_engine
from runner.quality import scoring as M
from runner.quality.stream import TokenStream, iter_windows, uses_bos, windows_key


@dataclass
class Reference:
    nll: np.ndarray  # baseline NLL per scored token
    top_ids: np.ndarray  # [n_scored, k]
    top_logprobs: np.ndarray  # [n_scored, k]
    baseline: str
    artifact_key: str
    engine: str

    @property
    def ppl(self) -> float:
        return M.perplexity(self.nll)


def baseline_reference(ctx) -> Reference:
    """The reference of the job's resolved eval.baseline preset on the job's token stream."""
    cfg = ctx.cfg
    baseline_cfg, baseline = ctx.baseline
    plan = ctx.baseline_plan
    return reference(
        ctx.model, cfg.eval, ctx.stream, cfg.hardware, ctx.cache, baseline, baseline_cfg.engine, plan.preset, plan.dtype
    )


def reference(
    model,
    eval_cfg,
    stream: TokenStream,
    hardware,
    cache: Cache,
    baseline_artifact,
    engine: str,
    baseline: str,
    dtype: Optional[str],
) -> Reference:
    """The baseline artifact's top-k log-probs on `engine` (the baseline preset's format.engine). `baseline` is the
    preset eval.baseline resolved to, `dtype` its torch dtype (None for a preset of another family)."""
    loader = get_engine(engine)
    version = loader.version()
    key = Cache.key(
        "reference",
        baseline_artifact.manifest["key"],
        dtype,  # bf16 and fp32 log-probs differ: never one for the other (the artifact key holds it too, implicitly)
        engine,
        version,  # another library version, or CUDA kernels instead of CPU ones, gives other log-probs
        hardware.device,
        stream.key,
        eval_cfg.ctx_len,
        eval_cfg.stride,
        uses_bos(stream, eval_cfg),
        eval_cfg.kld_topk,
        *windows_key(eval_cfg),
    )

    def build(folder):
        loaded = loader.load(baseline_artifact, model, hardware)
        nll, ids, lps = [], [], []
        try:
            for inputs, rows, targets in tqdm(
                list(iter_windows(stream, eval_cfg)), desc=f"reference ({baseline} on {engine})", unit="win"
            ):
                lp = loaded.logprobs(inputs)[rows]
                nll.append(M.token_nll(lp, targets))
                top_i, top_l = M.topk(lp, eval_cfg.kld_topk)
                ids.append(top_i)
                lps.append(top_l)
        finally:
            loaded.close()
        np.savez(
            folder / "reference.npz",
            nll=np.concatenate(nll).astype(np.float32),
            top_ids=np.concatenate(ids),
            top_logprobs=np.concatenate(lps),
        )
        meta = {"baseline": baseline, "dtype": dtype, "engine": engine, "artifact": baseline_artifact.manifest["key"]}
        (folder / "meta.json").write_text(json.dumps({**meta, "engine_version": version}))

    label = f"{model.name} {baseline} top-{eval_cfg.kld_topk}"
    hit = cache.get_or_build("references", key, build, label=label)
    data = np.load(hit / "reference.npz")
    return Reference(
        data["nll"].astype(np.float64),
        data["top_ids"],
        data["top_logprobs"],
        baseline,
        baseline_artifact.manifest["key"],
        engine,
    )
