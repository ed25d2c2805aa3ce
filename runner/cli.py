"""`qrun`: the Hydra app. One job = quantize -> evaluate -> benchmark, logged to MLflow."""
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from runner.config import register_configs
from runner.errors import exit_on_user_error
from runner.paths import CONF_DIR

register_configs()
log = logging.getLogger("qrun")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def qrun(cfg: DictConfig) -> dict:
    from runner import job
    from runner.report.summary import render
    from runner.tracking import Tracker

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(hc.runtime.output_dir)
    with exit_on_user_error():  # e.g. an unusable tracking.uri, found before the job's run exists
        result = job.run(cfg, run_dir, Path(hc.sweep.dir) if multirun else None, list(hc.overrides.task))
    if multirun:
        log.info("%s: %s", cfg.format.name, result["status"])
        return result
    tracker = Tracker(cfg.tracking)
    print("\n" + render([tracker.client.get_run(result["run_id"])], tracker.uri, tracker.experiment_name), flush=True)
    job.fail_fast_exit(result)
    return result


def main() -> None:
    from runner.callbacks import SWEEP_STATE, end_sweep_killed
    from runner.lifecycle import Terminated

    try:
        qrun()
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM as Terminated: the job's own run already ended KILLED
        end_sweep_killed()
        terminated = isinstance(e, Terminated)
        print(f"error: {'terminated (SIGTERM)' if terminated else 'interrupted'}: the run(s) ended KILLED", file=sys.stderr)
        sys.exit(128 + (15 if terminated else 2))
    if SWEEP_STATE["failed"]:
        print(f"error: {SWEEP_STATE['failed']} job(s) of the sweep failed (see the table above)", file=sys.stderr)
        sys.exit(1)
