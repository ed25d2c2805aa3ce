"""The quantize stage: the job's artifact on the context, its size metrics, manifest and cache tags."""

import time

from runner.formats.artifacts import MANIFEST, quantize
from runner.formats.base import describe_tensor_types
from runner.metrics import (
    PARAM_GROUP_SIZE,
    PARAM_GROUP_SIZE_WHY,
    SIZE_BITS_PER_WEIGHT,
    SIZE_BYTES,
    SIZE_COMPRESSION_VS_FP16,
    TIME_QUANTIZE_S,
    TIME_QUANTIZE_STAGE_S,
)
from runner.stages import StageContext, StageResult
from runner.tracking.models import ARTIFACT_KEY_TAG

# what Format.resolve decided (runner/formats/base.py) -> the param it is logged as
RESOLVED_PARAMS = {"group_size": PARAM_GROUP_SIZE, "group_size_why": PARAM_GROUP_SIZE_WHY}


def run(ctx: StageContext) -> StageResult:
    cfg, model = ctx.cfg, ctx.model
    start = time.perf_counter()
    artifact = ctx.artifact = quantize(model, cfg.format, cfg.calibration, cfg.hardware, ctx.cache)
    stage_s = time.perf_counter() - start
    size = {
        SIZE_BYTES: artifact.bytes,
        SIZE_BITS_PER_WEIGHT: artifact.bits_per_weight,
        SIZE_COMPRESSION_VS_FP16: 2.0 * model.n_params / artifact.bytes if artifact.bytes else None,
        TIME_QUANTIZE_S: artifact.manifest["quantize_s"],  # the cost of making it, even on a cache hit
        TIME_QUANTIZE_STAGE_S: stage_s,
    }
    params = {name: artifact.resolved[k] for k, name in RESOLVED_PARAMS.items() if k in artifact.resolved}
    if artifact.manifest.get("tensor_types"):  # what the file really holds, e.g. K-quant fallbacks
        params["artifact.contents"] = describe_tensor_types(artifact.manifest["tensor_types"])
    return StageResult(
        metrics=size,
        params=params,
        files=[(artifact.path / MANIFEST, None)],
        tags={
            "cache.artifact": "remote" if artifact.downloaded_from else "hit" if artifact.cache_hit else "miss",
            "artifact.path": str(artifact.path),
            ARTIFACT_KEY_TAG: artifact.manifest["key"],
            **({"artifact.downloaded_from": artifact.downloaded_from} if artifact.downloaded_from else {}),
        },
        summary={"size": size, "manifest": artifact.manifest},
    )
