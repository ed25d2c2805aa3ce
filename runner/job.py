"""One job = the configured stages (quantize -> evaluate -> benchmark), tracked as one MLflow run.

This module only orchestrates: the stages themselves and their one signature are in runner/stages/.
"""

import json
import logging
import sys
import tempfile
import traceback
import uuid
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from runner import stages
from runner.benchmark.fit import preflight
from runner.cache import Cache
from runner.config import baseline as baseline_rule
from runner.config.machine import check_machine
from runner.data.calibration import calibration_identity
from runner.data.corpus import corpus_identity
from runner.data.models import model_config, model_fingerprint, resolve_model
from runner.engines import get_engine
from runner.errors import UserError
from runner.formats import get_format, load_format_preset
from runner.metrics import PARAM_BASELINE_DTYPE, PARAM_BASELINE_FORMAT, PARAM_BASELINE_PLACEMENT, PARAM_BASELINE_WHY
from runner.stages import StageContext, StageResult, check_engine, check_values, plan, run_stage
from runner.system.environment import code_identity, environment_tags, host_identity
from runner.system.lifecycle import sigterm_raises
from runner.system.packages import dist_versions
from runner.tracking import PARENT_FILE, RUN_FILE, SKIPPED_TAG, Tracker, child_run_name, flatten
from runner.tracking.models import log_artifact_model
from runner.tracking.remote_artifacts import mlflow_artifact_source

log = logging.getLogger(__name__)
PROJECT_DIR = Path(__file__).resolve().parent.parent


def run(cfg: DictConfig, run_dir: Path, sweep_dir: Optional[Path], overrides: list) -> Dict[str, Any]:
    """Run one job. Returns {"status", "run_id", "error"}; raises nothing a user caused."""
    tracker = Tracker(cfg.tracking)  # an unreachable store fails here, before any work
    key = job_key(cfg)
    tracker.close_stale_runs(key)  # with or without resume: a dead process's run must not stay RUNNING
    if cfg.resume:
        done = tracker.find_run(key, "FINISHED")
        if done is not None:  # the same job already finished: reuse its run, create no duplicate
            log.info(
                "%s: already done in MLflow run %s (resume=false to run it again)", cfg.format.name, done.info.run_id
            )
            return _record(run_dir, {"status": "FINISHED", "run_id": done.info.run_id, "reused": True})
    parent = _parent_run_id(sweep_dir, tracker.uri)
    tags = {**environment_tags(PROJECT_DIR), **tracker.job_tags(key)}
    # SIGTERM (kill, SLURM preemption) unwinds like Ctrl-C: temp entries go, servers stop, the run ends KILLED
    with sigterm_raises():
        tracker.start(run_name=child_run_name(cfg.format), parent_run_id=parent, tags=tags)
        status, heartbeat = "KILLED", tracker.heartbeat(tracker.run_id)
        try:
            _run_stages(cfg, tracker, run_dir, overrides)
            status = "FINISHED"
        except (Exception, KeyboardInterrupt) as e:
            status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
            user_error = isinstance(e, UserError)
            text = str(e) if user_error else traceback.format_exc()
            try:  # the store may be what failed: the status update in `finally` is still attempted
                tracker.set_tags({"error": str(e).splitlines()[0][:500] if str(e) else type(e).__name__})
                tracker.log_text(text, "error.txt")
            except Exception as log_failure:
                log.error("could not log the error to MLflow (%s: %s)", type(log_failure).__name__, log_failure)
            if isinstance(e, KeyboardInterrupt):
                raise
            log.error("%s failed: %s", cfg.format.name, text if not user_error else e)
            return _record(
                run_dir,
                {
                    "status": "FAILED",
                    "run_id": tracker.run_id,
                    "error": str(e) if user_error else repr(e),
                    "user_error": user_error,
                },
            )
        finally:
            heartbeat.stop()
            tracker.end_quietly(status)
    return _record(run_dir, {"status": "FINISHED", "run_id": tracker.run_id})


def job_key(cfg: DictConfig) -> str:
    """Identity of a job: everything that changes its results, not where they are logged or cached.

    Beyond the config: the eval and calibration texts by content (not path), the model's hub commit,
    the libraries of the format, the engine and the eval baseline, the runner's code and the host.
    """
    settings = OmegaConf.to_container(cfg, resolve=True)
    if cfg.benchmark.get("kind") == "serving" and "benchmark" in cfg.stages:
        settings["server"] = _server_or_none(cfg)  # a scenario's deployment.servers acts on the job
    # a scenario acts on jobs only through the benchmark.* it sets (resolved above); its bounds judge runs after
    for k in ("tracking", "cache", "resume", "deployment"):
        settings.pop(k, None)
    settings["eval"].pop("noise_floor", None)  # names a row the report compares with: changes no job's numbers
    settings["hardware"].pop("slurm_constraint", None)  # which nodes a cluster picks, not what runs on them
    try:
        formats = [cfg.format] + (
            [load_format_preset(baseline_rule.preset_for_key(cfg.eval.baseline), "eval.baseline")]
            if stages.uses_baseline(cfg)
            else []
        )
        settings["libraries"] = {
            f.name: {**get_format(f.family).library_versions(), "engine": get_engine(f.engine).version()}
            for f in formats
        }
        if stages.libraries(cfg):  # e.g. lm-eval for tasks: an upgrade re-scores them
            settings["libraries"]["stages"] = dist_versions(*stages.libraries(cfg))
        with tempfile.TemporaryDirectory(prefix="qrun-key-") as scratch:
            cache = Cache(cfg.cache.dir, cfg.cache.mode, scratch=Path(scratch))
            if stages.reads_stream(cfg):
                settings["eval"]["corpus"] = corpus_identity(cfg.eval.corpus, cache, "eval.corpus")
            if any(get_format(f.family).uses_calibration(f) for f in formats):
                settings["calibration"] = calibration_identity(cfg.calibration, cache)
    except (UserError, MissingMandatoryValue):  # e.g. a missing text file: the job fails on it in its run; never reuse
        settings["unresolved"] = uuid.uuid4().hex
    return Cache.key("job", settings, model_fingerprint(cfg.model), code_identity(), host_identity())


def _server_or_none(cfg: DictConfig) -> Optional[str]:
    from runner.benchmark.servers import resolve_server

    try:
        return resolve_server(cfg)
    except UserError:
        return None  # the job's checks refuse it, before any work


def _record(run_dir: Path, result: Dict[str, Any]) -> Dict[str, Any]:
    """run.json in the job's dir: the sweep summary collects these, whichever process ran the job."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).write_text(json.dumps(result))
    return result


def _run_stages(cfg: DictConfig, tracker: Tracker, run_dir: Path, overrides: list) -> None:
    params = flatten(OmegaConf.to_container(cfg, resolve=True))
    if params.get("eval.add_bos") is None:  # auto: the resolved value is logged with the token stream
        params.pop("eval.add_bos", None)
    tracker.log_params(params)
    for name in ("config.yaml", "overrides.yaml"):
        if (run_dir / ".hydra" / name).exists():
            tracker.log_file(run_dir / ".hydra" / name, "hydra")
    planned = plan(cfg.stages)
    cache = Cache(cfg.cache.dir, cfg.cache.mode, scratch=run_dir / "scratch")
    get_format(cfg.format.family).validate(cfg.format, None)
    engine = get_engine(cfg.format.engine)  # always the job's own config, never the cached artifact's first user
    check_engine(cfg)  # said even where the engine is not installed
    engine.check_available(cfg.hardware)
    tracker.set_tags({"engine.name": engine.NAME, "engine.version": engine.version()})
    check_values(cfg)  # values that cannot work, before the model is touched
    check_machine(cfg.hardware)  # a CUDA profile must describe this machine's GPUs (count, name, memory per card)
    if cfg.cache.get("remote") == "mlflow":
        cache.remote_artifacts = mlflow_artifact_source(cfg.tracking)
    if cfg.get("deployment") is not None and _skipped_by_preflight(cfg, tracker, cache):
        return

    model = resolve_model(cfg.model, cache)
    tracker.log_params(
        {"model.origin": model.origin, "model.identity": model.identity, "model.n_params": model.n_params}
    )
    ctx = StageContext(cfg=cfg, model=model, cache=cache, run_dir=run_dir, engine=engine)
    if stages.uses_baseline(cfg):  # resolved before any work: a baseline that cannot fit the GPUs fails here
        resolved = ctx.baseline_plan
        tracker.log_params(
            {
                PARAM_BASELINE_FORMAT: resolved.preset,
                PARAM_BASELINE_DTYPE: resolved.dtype or "the preset's own",
                PARAM_BASELINE_PLACEMENT: resolved.placement.text,
                PARAM_BASELINE_WHY: resolved.why,
            }
        )
    results: Dict[str, Any] = {}
    for name in planned:
        result = run_stage(name, ctx)
        if name == "quantize":  # the artifact becomes the run's LoggedModel; every metric logged next is linked to it
            log_artifact_model(tracker, ctx.artifact, cfg.format, model)
            kernel = engine.kernel(ctx.artifact, cfg.hardware)  # this machine's, whatever the artifact's manifest says
            if kernel and len(planned) > 1:  # a stage after quantize loads it here
                tracker.log_params({"engine.kernel": kernel})
        _log(tracker, result)
        results.update(result.summary)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    tracker.log_file(run_dir / "results.json")


def _skipped_by_preflight(cfg: DictConfig, tracker: Tracker, cache: Cache) -> bool:
    """Under a scenario: will the format fit the scenario's hardware at its load (estimated from the base model's
    config.json, before quantizing)? One that cannot is skipped, its run tagged with the reason (the decision lists
    it among the rejected); the estimate is logged either way."""
    verdict = preflight(cfg, model_config(cfg.model, cache))
    if verdict is None:
        return False
    tracker.log_params(verdict.params())
    if verdict.fits:
        return False
    tracker.set_tags({SKIPPED_TAG: verdict.reason()})
    log.warning("%s skipped before any work: %s", cfg.format.name, verdict.reason())
    return True


def _log(tracker: Tracker, result: StageResult) -> None:
    tracker.log_params(result.params)
    tracker.log_metrics(result.metrics)
    tracker.set_tags(result.tags)
    for path, folder in result.files:
        tracker.log_file(path, folder)


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
