"""`qrun`: the Hydra app. One job = quantize -> evaluate -> benchmark, logged to MLflow."""

import logging
import os
import sys
import textwrap
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner.config.schema import register_configs
from runner.errors import exit_on_user_error
from runner.paths import CONF_DIR
from runner.system.library_logs import job_log_files, route_library_logs

register_configs()
log = logging.getLogger("qrun")

# qrun --help (conf/hydra/help/qrun.yaml): what each group decides; its options are read from conf/
GROUPS = {
    "model": "the base model (hf: a HF folder or hub id, gguf: a local .gguf)",
    "format": "the format and the engine that runs it (format.backend picks the library)",
    "calibration": "calibration text for the formats that need it",
    "hardware": "device, threads, GPUs, memory budget",
    "eval": "the perplexity / KLD protocol",
    "benchmark": "prompt length, new tokens, repeats; serving: a real server under load",
    "tracking": "the MLflow store",
    "experiment": "a preset sweep, with -m",
    "deployment": "the scenario a sweep's recommendation is for",
    "hydra/launcher": "where the jobs of a sweep run (basic: one after another, here)",
}


def help_groups() -> str:
    lines = []
    for group, what in GROUPS.items():
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        if group == "hydra/launcher":
            options = ["basic"] + options
        if options:
            lines.append(
                textwrap.fill(
                    ", ".join(options),
                    100,
                    initial_indent=f"  {group:<15} ",
                    subsequent_indent=" " * 18,
                    break_on_hyphens=False,
                )
            )
            lines.append(f"{'':<18}-- {what}")
    return "\n".join(lines)


OmegaConf.register_new_resolver("qrun_help_groups", help_groups, replace=True)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def qrun(cfg: DictConfig) -> dict:
    route_library_logs()  # before the job imports torch, torchao, llama.cpp: their noise goes to the job log
    from runner import job
    from runner.report.summary import render
    from runner.tracking import Tracker

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(hc.runtime.output_dir)
    if multirun and "joblib" in str(hc.launcher.get("_target_", "")) and str(cfg.hardware.device).startswith("cuda"):
        _claim_gpus(Path(hc.sweep.dir), int(cfg.hardware.n_gpus))
    with exit_on_user_error():  # e.g. an unusable tracking.uri, found before the job's run exists
        result = job.run(cfg, run_dir, Path(hc.sweep.dir) if multirun else None, list(hc.overrides.task))
    _log_job_log(Tracker, cfg, result)
    if multirun:
        log.info("%s: %s", cfg.format.name, result["status"])
        return result
    tracker = Tracker(cfg.tracking)
    print("\n" + render([tracker.client.get_run(result["run_id"])], tracker.uri, tracker.experiment_name), flush=True)
    job.fail_fast_exit(result)
    return result


def _claim_gpus(sweep_dir: Path, n_gpus: int) -> None:
    """A joblib worker on a GPU machine: its own n_gpus cards (CUDA_VISIBLE_DEVICES) for as long as it lives, so
    parallel jobs never share a card (runner/system/gpu_slots.py). Before the job: nothing has touched CUDA yet."""
    from runner.system.gpu import machine_gpus
    from runner.system.gpu_slots import claim

    cards = [g.index for g in machine_gpus()]
    if len(cards) >= n_gpus:  # fewer: the job's profile check says so, naming the key
        log.info("GPU(s) %s for this worker's jobs", claim(sweep_dir, cards, n_gpus))


def _log_job_log(tracker_cls, cfg: DictConfig, result: dict) -> None:
    """The job's log file (Hydra's <job>.log: stage lines, library warnings, llama.cpp's log) on its MLflow run."""
    if not result.get("run_id") or result.get("reused"):
        return
    for handler in job_log_files():
        handler.flush()
        try:
            tracker_cls(cfg.tracking).client.log_artifact(result["run_id"], handler.baseFilename, "logs")
        except Exception as e:  # the results are logged already: a missing log file must not fail the job
            log.warning(
                "could not log %s to MLflow run %s (%s: %s)",
                handler.baseFilename,
                result["run_id"],
                type(e).__name__,
                e,
            )


def one_line_config_errors() -> None:
    """Hydra reports a composition error (a typo'd key, a wrong type, an unknown option) in several lines, exit 1:
    give it the project's one line and exit 2 instead. Hydra has no hook for this; its reporter (hydra-core 1.3.8,
    pinned) is wrapped. HYDRA_FULL_ERROR=1 still gets Hydra's own report and trace."""
    import hydra._internal.utils as hydra_utils

    from runner.errors import UserError, config_error
    from runner.sweep import end_live_sweep, sweep_is_live

    report = hydra_utils.run_and_report

    def run_and_report(func):
        def checked():
            try:
                return func()
            except Exception as ex:
                error = config_error(ex)
                if error is not None:
                    reason = f"a job's config does not compose: {error}"  # maybe met after the sweep began
                elif sweep_is_live():  # jobs record their own failures: what escapes a live sweep is its launcher's
                    error = UserError(
                        "hydra.launcher",
                        f"the launcher failed ({type(ex).__name__}: {(str(ex).splitlines() or [''])[0][:200]})",
                        "check hydra.launcher.* (the cluster's address, partition, resources), or leave the launcher "
                        "out to run the jobs here",
                    )
                    reason = str(error)
                if error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                    end_live_sweep("FAILED", f"the sweep failed: {type(ex).__name__}: {ex}")
                    raise
                end_live_sweep("FAILED", reason)
                print(f"error: {error}", file=sys.stderr, flush=True)
                sys.exit(2)

        return report(checked)

    hydra_utils.run_and_report = run_and_report


def main() -> None:
    from runner.sweep_stamp import replay

    if replay(sys.argv[1:]):  # an unchanged, finished sweep: what it printed, without composing or opening MLflow
        return
    from runner.sweep import SWEEP_STATE, end_sweep_killed
    from runner.system.lifecycle import Terminated

    one_line_config_errors()
    try:
        qrun()
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM as Terminated: the job's own run already ended KILLED
        end_sweep_killed()
        terminated = isinstance(e, Terminated)
        print(
            f"error: {'terminated (SIGTERM)' if terminated else 'interrupted'}: the run(s) ended KILLED",
            file=sys.stderr,
        )
        sys.exit(128 + (15 if terminated else 2))
    if SWEEP_STATE["failed"]:
        print(f"error: {SWEEP_STATE['failed']} job(s) of the sweep failed (see the table above)", file=sys.stderr)
        sys.exit(1)
