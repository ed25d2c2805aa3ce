"""Sweep-level work as a Hydra callback: the MLflow parent run and the sweep summary.

The parent run id is written into the sweep dir, so jobs in other processes (joblib, Ray,
SLURM) attach to it as children.
"""
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from runner.summary import render
from runner.tracking import PARENT_FILE, RUN_FILE, Tracker, environment_tags

SWEEP_STATE = {"failed": 0}


class MlflowSweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        tracker = Tracker(config.tracking)
        tags = environment_tags(Path(__file__).resolve().parent.parent)
        tags["sweep.dir"] = str(sweep_dir.resolve())
        tags["qrun.sweep"] = "true"
        run_id = tracker.start(run_name=f"sweep {sweep_dir.name}", tags=tags)
        tracker.log_params({"sweep.overrides": " ".join(config.hydra.overrides.task)})
        (sweep_dir / PARENT_FILE).write_text(json.dumps({"run_id": run_id, "uri": tracker.uri}))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        info = json.loads((sweep_dir / PARENT_FILE).read_text())
        tracker = Tracker(config.tracking)
        tracker.run_id = info["run_id"]
        children = {r.info.run_id: r for r in tracker.client.search_runs(
            [tracker.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{info['run_id']}'", max_results=10000)}
        reused = []
        for run_file in sorted(sweep_dir.glob(f"*/{RUN_FILE}")):  # jobs finished by an earlier sweep (resume)
            result = json.loads(run_file.read_text())
            if result.get("reused") and result["run_id"] not in children:
                children[result["run_id"]] = tracker.client.get_run(result["run_id"])
                reused.append(result["run_id"])
        children = list(children.values())
        if reused:
            tracker.log_params({"sweep.reused_runs": ",".join(reused)})
        text = render(children, tracker.uri, tracker.experiment_name, info["run_id"], reused=set(reused))
        print("\n" + text, flush=True)
        (sweep_dir / "summary.txt").write_text(text + "\n")
        tracker.log_file(sweep_dir / "summary.txt")
        failed = sum(r.info.status != "FINISHED" for r in children)
        SWEEP_STATE["failed"] = failed
        tracker.end("FAILED" if failed or not children else "FINISHED")
