"""Sweep-level work as a Hydra callback: the MLflow parent run, the sweep summary and the decision.

The parent run is named after what was swept (the overrides or experiment preset, the model, the
time). The sweep ends with the comparison table and a recommendation: for the deployment scenario
when one is given (deployment=<name>: choice, runner-up, why, every rejected format with what it
breaks, capacity), else what the measurements can say without one -- printed, and logged to the
parent run (recommendation.md at its root; table, CSV and plots under report/).

The parent run id is written into the sweep dir, so jobs in other processes (joblib, Ray,
SLURM) attach to it as children. While the sweep runs, the launching process refreshes the parent's
heartbeat and turns SIGTERM into an exception (the parent then ends KILLED, runner/cli.py); parent
runs of sweeps killed harder than that are closed by the next sweep's start.
"""

import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from runner import sweep_stamp
from runner.errors import exit_on_user_error
from runner.paths import PROJECT_DIR
from runner.report.summary import render
from runner.system.environment import environment_tags
from runner.system.lifecycle import owner_tags, sigterm_raises
from runner.tracking import PARENT_FILE, RUN_FILE, SWEEP_TAG, Tracker

SWEEP_STATE = {"failed": 0}
_LIVE: dict = {}  # the sweep this process launched and has not ended: its tracker and what to undo


class MlflowSweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.config.machine import check_machine

        with exit_on_user_error():  # a CUDA profile this machine does not have: one line before any job
            check_machine(config.hardware)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with exit_on_user_error():  # an unusable tracking.uri: one line, not a traceback
            tracker = Tracker(config.tracking)
        tracker.close_stale_sweeps()
        tags = environment_tags(PROJECT_DIR)
        tags["sweep.dir"] = str(sweep_dir.resolve())
        tags[SWEEP_TAG] = "true"
        tags.update(owner_tags())
        if config.get("deployment") is not None:  # a scenario that cannot mean anything: one line before any job
            from runner.config.deployment import validate

            with exit_on_user_error():
                validate(config.deployment)
            tags["deployment"] = config.deployment.name
        run_id = tracker.start(run_name=sweep_name(config), tags=tags)
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
        children = {
            r.info.run_id: r
            for r in tracker.client.search_runs(
                [tracker.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{info['run_id']}'",
                max_results=10000,
            )
        }
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
        printed = [text]
        (sweep_dir / "summary.txt").write_text(text + "\n")
        tracker.log_file(sweep_dir / "summary.txt")
        failed = sum(r.info.status != "FINISHED" for r in children)
        SWEEP_STATE["failed"] = failed
        status = "FAILED" if failed or not children else "FINISHED"
        try:
            if children:
                printed.append(_decide(config, tracker, children, sweep_dir / "report"))
                print("\n" + printed[-1], flush=True)
        except Exception as e:  # the jobs' runs stand; the parent says the decision could not be made
            status = "FAILED"
            SWEEP_STATE["failed"] = max(failed, 1)
            tracker.set_tags({"error": f"the recommendation failed: {type(e).__name__}: {e}"[:500]})
            logging.getLogger(__name__).exception("the recommendation could not be made")
            print(f"error: the recommendation could not be made ({type(e).__name__}: {e})", file=sys.stderr, flush=True)
        finally:
            _stop_live_sweep()
            tracker.end(status)
        if status == "FINISHED":  # after the parent run ended: the stamp holds the store's final state
            sweep_stamp.write(
                sys.argv[1:], config.hydra.launcher._target_, tracker.uri, info["run_id"], "\n\n".join(printed)
            )


def sweep_name(config: DictConfig) -> str:
    """What was swept, on which model, when: e.g. 'format=gguf_q8_0,gguf_q4_k_m deployment=cpu_chat_4users ·
    smollm2-135m · 2026-11-27 15:40'."""
    from datetime import datetime

    parts = []
    for override in config.hydra.overrides.task:
        key, _, value = str(override).partition("=")
        if key.split(".")[0] == "model":
            continue  # the model is named below
        parts.append(f"{key}={Path(value).name if '/' in value else value}" if value else key)
    what = " ".join(parts) or "defaults"
    what = what if len(what) <= 120 else what[:117] + "..."
    model = str(config.model.name)
    return f"{what} · {Path(model).name if '/' in model else model} · {datetime.now():%Y-%m-%d %H:%M}"


def _decide(config: DictConfig, tracker: Tracker, children, out: Path) -> str:
    """The recommendation (scenario) or what can be said without one; files logged to the parent run."""
    from runner.report.cli import capacity_curves, write_report
    from runner.report.data import rows_of
    from runner.report.decision_text import decision_text, without_scenario_text
    from runner.report.recommend import Constraints, recommend
    from runner.report.served import served_section

    rows = rows_of(children, tracker.uri)
    out.mkdir(parents=True, exist_ok=True)
    curves = capacity_curves(tracker.client, rows)
    d = config.get("deployment")
    if d is not None:
        budget = (
            config.hardware.memory_budget_bytes if config.hardware.name == d.hardware else _profile_budget(d.hardware)
        )
        c = Constraints.of_scenario(d, budget)
        text = decision_text(recommend(rows, c, d.prefer), c, rows)
    else:
        text = without_scenario_text(rows)
    text += served_section(rows, curves)
    (out / "recommendation.md").write_text(text)
    tracker.log_file(out / "recommendation.md")
    slo = d.slo.latency_s if d is not None else None
    for f in write_report(rows, out, curves, slo):
        tracker.log_file(f, "report")
    return text


def _profile_budget(name: str):
    from runner.config.presets import load_preset

    return load_preset("hardware", name, "deployment.hardware").memory_budget_bytes


def _stop_live_sweep():
    if _LIVE:
        _LIVE.pop("undo").close()
        return _LIVE.pop("tracker")
    return None


def sweep_is_live() -> bool:
    """This process launched a sweep that has not ended (its parent run is RUNNING)."""
    return bool(_LIVE)


def end_sweep_killed() -> None:
    """The launching process stops mid-sweep (SIGTERM, Ctrl-C): its parent run ends KILLED, not RUNNING."""
    end_live_sweep("KILLED", "the sweep was interrupted (SIGTERM or Ctrl-C)")


def end_live_sweep(status: str, reason: str) -> None:
    """The sweep this process launched ends early: its parent run ends with `status`, the reason as its error tag."""
    tracker = _stop_live_sweep()
    if tracker is not None:
        with contextlib.suppress(Exception):
            tracker.set_tags({"error": reason[:500]})
        tracker.end_quietly(status)
