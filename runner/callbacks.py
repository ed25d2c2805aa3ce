"""Sweep-level work as a Hydra callback: the MLflow parent run and the sweep summary.

The parent run id is written into the sweep dir, so jobs in other processes (joblib, Ray,
SLURM) attach to it as children. While the sweep runs, the launching process refreshes the parent's
heartbeat and turns SIGTERM into an exception (the parent then ends KILLED, runner/cli.py); parent
runs of sweeps killed harder than that are closed by the next sweep's start.
"""
import contextlib
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from runner.environment import environment_tags
from runner.errors import exit_on_user_error
from runner.lifecycle import owner_tags, sigterm_raises
from runner.paths import PROJECT_DIR
from runner.report.summary import render
from runner.tracking import PARENT_FILE, RUN_FILE, SWEEP_TAG, Tracker

SWEEP_STATE = {"failed": 0}
_LIVE: dict = {}  # the sweep this process launched and has not ended: its tracker and what to undo


class MlflowSweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with exit_on_user_error():  # an unusable tracking.uri: one line, not a traceback
            tracker = Tracker(config.tracking)
        tracker.close_stale_sweeps()
        tags = environment_tags(PROJECT_DIR)
        tags["sweep.dir"] = str(sweep_dir.resolve())
        tags[SWEEP_TAG] = "true"
        tags.update(owner_tags())
        run_id = tracker.start(run_name=f"sweep {sweep_dir.name}", tags=tags)
        undo = contextlib.ExitStack()
        _LIVE.update(tracker=tracker, undo=undo)
        undo.enter_context(sigterm_raises())
        undo.callback(tracker.heartbeat(run_id).stop)
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
        _stop_live_sweep()
        tracker.end("FAILED" if failed or not children else "FINISHED")


def _stop_live_sweep():
    if _LIVE:
        _LIVE.pop("undo").close()
        return _LIVE.pop("tracker")
    return None


def end_sweep_killed() -> None:
    """The launching process stops mid-sweep (SIGTERM, Ctrl-C): its parent run ends KILLED, not RUNNING."""
    tracker = _stop_live_sweep()
    if tracker is not None:
        with contextlib.suppress(Exception):
            tracker.set_tags({"error": "the sweep was interrupted (SIGTERM or Ctrl-C)"})
        tracker.end_quietly("KILLED")
