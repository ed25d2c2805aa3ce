"""One job = quantize -> evaluate -> benchmark, tracked as one MLflow run."""
import json
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import DictConfig, OmegaConf

from runner.cache import Cache
from runner.data.models import model_fingerprint, resolve_model
from runner.engines import get_engine
from runner.errors import UserError
from runner.formats import get_format, load_format_preset
from runner.formats.base import describe_tensor_types
from runner.stages.benchmark import benchmark
from runner.stages.evaluate import evaluate, protocol, reference, token_stream
from runner.stages.quantize import quantize
from runner.tracking import PARENT_FILE, RUN_FILE, Tracker, environment_tags, flatten

log = logging.getLogger(__name__)
PROJECT_DIR = Path(__file__).resolve().parent.parent


def run(cfg: DictConfig, run_dir: Path, sweep_dir: Optional[Path], overrides: list) -> Dict[str, Any]:
    """Run one job. Returns {"status", "run_id", "error"}; raises nothing a user caused."""
    tracker = Tracker(cfg.tracking)  # an unreachable store fails here, before any work
    key = job_key(cfg)
    if cfg.resume:
        tracker.close_stale_runs(key)
        done = tracker.find_run(key, "FINISHED")
        if done is not None:  # the same job already finished: reuse its run, create no duplicate
            log.info("%s: already done in MLflow run %s (resume=false to run it again)", cfg.format.name, done.info.run_id)
            return _record(run_dir, {"status": "FINISHED", "run_id": done.info.run_id, "reused": True})
    parent = _parent_run_id(sweep_dir, tracker.uri)
    tags = {**environment_tags(PROJECT_DIR), **tracker.job_tags(key)}
    tracker.start(run_name=f"{cfg.format.name}", parent_run_id=parent, tags=tags)
    try:
        _run_stages(cfg, tracker, run_dir, overrides)
    except (Exception, KeyboardInterrupt) as e:
        user_error = isinstance(e, UserError)
        text = str(e) if user_error else traceback.format_exc()
        tracker.log_text(text, "error.txt")
        tracker.set_tags({"error": str(e).splitlines()[0][:500] if str(e) else type(e).__name__})
        tracker.end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        if isinstance(e, KeyboardInterrupt):
            raise
        log.error("%s failed: %s", cfg.format.name, text if not user_error else e)
        return _record(run_dir, {"status": "FAILED", "run_id": tracker.run_id, "error": str(e) if user_error else repr(e),
                                 "user_error": user_error})
    tracker.end("FINISHED")
    return _record(run_dir, {"status": "FINISHED", "run_id": tracker.run_id})


def job_key(cfg: DictConfig) -> str:
    """Identity of a job: everything that changes its results, not where they are logged or cached."""
    settings = OmegaConf.to_container(cfg, resolve=True)
    for k in ("tracking", "cache", "resume"):
        settings.pop(k, None)
    from runner import __version__

    return Cache.key("job", settings, model_fingerprint(cfg.model), __version__)


def _record(run_dir: Path, result: Dict[str, Any]) -> Dict[str, Any]:
    """run.json in the job's dir: the sweep summary collects these, whichever process ran the job."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).write_text(json.dumps(result))
    return result


def _run_stages(cfg: DictConfig, tracker: Tracker, run_dir: Path, overrides: list) -> None:
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    tracker.log_params(params)
    for name in ("config.yaml", "overrides.yaml"):
        if (run_dir / ".hydra" / name).exists():
            tracker.log_file(run_dir / ".hydra" / name, "hydra")
    _check_stages(cfg)
    cache = Cache(cfg.cache.dir, cfg.cache.mode, scratch=run_dir / "scratch")
    get_format(cfg.format.family).validate(cfg.format, None)
    get_engine(cfg.format.engine).check_available(cfg.hardware)

    model = resolve_model(cfg.model, cache)
    tracker.log_params({"model.origin": model.origin, "model.identity": model.identity, "model.n_params": model.n_params})

    start = time.perf_counter()
    artifact = quantize(model, cfg.format, cfg.calibration, cfg.hardware, cache)
    stage_s = time.perf_counter() - start
    n = model.n_params
    size = {
        "size/bytes": artifact.bytes,
        "size/bits_per_weight": artifact.bits_per_weight,
        "size/compression_vs_fp16": 2.0 * n / artifact.bytes if artifact.bytes else None,
        "time/quantize_s": artifact.manifest["quantize_s"],  # the cost of making it, even on a cache hit
        "time/quantize_stage_s": stage_s,
    }
    tracker.log_metrics(size)
    tracker.set_tags({"cache.artifact": "hit" if artifact.cache_hit else "miss", "artifact.path": str(artifact.path)})
    tracker.log_file(artifact.path / "manifest.json")
    if artifact.manifest.get("tensor_types"):  # what the file really holds, e.g. K-quant fallbacks
        tracker.log_params({"artifact.contents": describe_tensor_types(artifact.manifest["tensor_types"])})
    results: Dict[str, Any] = {"size": size, "manifest": artifact.manifest}

    if "evaluate" in cfg.stages or "benchmark" in cfg.stages:
        stream = token_stream(model, cfg.eval, cache)
    if "evaluate" in cfg.stages:
        start = time.perf_counter()
        baseline_cfg = load_format_preset(cfg.eval.baseline, "eval.baseline")
        baseline = quantize(model, baseline_cfg, cfg.calibration, cfg.hardware, cache)
        ref = reference(model, cfg.eval, stream, cfg.hardware, cache, baseline)
        quality = evaluate(artifact, model, cfg.eval, stream, ref, cfg.hardware)
        quality["time/evaluate_s"] = time.perf_counter() - start
        tracker.log_params(protocol(cfg.eval, stream))
        tracker.log_metrics(quality)
        results["quality"] = quality
    if "benchmark" in cfg.stages:
        start = time.perf_counter()
        perf = benchmark(artifact, model, cfg.benchmark, stream, cfg.hardware)
        perf["time/benchmark_s"] = time.perf_counter() - start
        tracker.log_metrics(perf)
        results["perf"] = perf
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    tracker.log_file(run_dir / "results.json")
    for f in sorted(p for p in (run_dir / "artifacts").rglob("*") if p.is_file()):  # files a stage wrote for the run
        tracker.log_file(f, str(f.parent.relative_to(run_dir)))


def _check_stages(cfg: DictConfig) -> None:
    known = {"quantize", "evaluate", "benchmark"}
    unknown = [s for s in cfg.stages if s not in known]
    if unknown or "quantize" not in cfg.stages:
        raise UserError("stages", f"unknown or missing stages {unknown or ['quantize']}",
                        "use a list drawn from [quantize,evaluate,benchmark] that includes quantize")


def _parent_run_id(sweep_dir: Optional[Path], uri: str) -> Optional[str]:
    if sweep_dir is None or not (sweep_dir / PARENT_FILE).exists():
        return None
    info = json.loads((sweep_dir / PARENT_FILE).read_text())
    return info["run_id"] if info.get("uri") == uri else None


def fail_fast_exit(result: Dict[str, Any]) -> None:
    """Single run: a user error is one line on stderr and exit 2; anything else exits 1."""
    if result["status"] == "FINISHED":
        return
    print(f"error: {result['error']}", file=sys.stderr)
    sys.exit(2 if result.get("user_error") else 1)
