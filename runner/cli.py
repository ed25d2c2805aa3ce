"""`qrun`: the Hydra app. One job = quantize -> evaluate -> benchmark, logged to MLflow."""
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from runner.config import register_configs

register_configs()
log = logging.getLogger("qrun")
# absolute, so the installed `qrun` script finds conf/ at the repository root (editable install)
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def qrun(cfg: DictConfig) -> dict:
    from runner import job
    from runner.summary import render
    from runner.tracking import Tracker

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(hc.runtime.output_dir)
    result = job.run(cfg, run_dir, Path(hc.sweep.dir) if multirun else None, list(hc.overrides.task))
    if multirun:
        log.info("%s: %s", cfg.format.name, result["status"])
        return result
    tracker = Tracker(cfg.tracking)
    print("\n" + render([tracker.client.get_run(result["run_id"])], tracker.uri, tracker.experiment_name), flush=True)
    job.fail_fast_exit(result)
    return result


def main() -> None:
    from runner.callbacks import SWEEP_STATE

    qrun()
    if SWEEP_STATE["failed"]:
        print(f"error: {SWEEP_STATE['failed']} job(s) of the sweep failed (see the table above)", file=sys.stderr)
        sys.exit(1)
