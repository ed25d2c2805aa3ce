"""No MLflow run stays RUNNING after its process is gone: SIGTERM, a dead host, a killed sweep, a failing store."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import QRUN, ROOT, TINY_ARGS, mlflow_runs, qrun_env, run_job, run_qrun, seed_store
from runner.system.lifecycle import Terminated, sigterm_raises


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    return int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
        ).stdout
    )


def _tracker(db: Path):
    from runner.tracking import Tracker

    return Tracker(OmegaConf.create({"uri": f"sqlite:///{db}", "experiment": "quant-runner"}))


def _owner_tags(host: str, pid: int, heartbeat_age_s: float):
    return {"qrun.host": host, "qrun.pid": str(pid), "qrun.heartbeat": f"{time.time() - heartbeat_age_s:.0f}"}


def test_sigterm_raises_terminated_and_restores_the_previous_handler():
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        with sigterm_raises():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) is previous


def test_sigterm_of_a_job_ends_its_run_killed_and_leaves_no_temp(tmp_path, empty_cache, tiny_model_dir):
    cache = empty_cache  # its own cache: every stage writes, so the kill can land inside an entry
    env = qrun_env(cache)
    seed_store(tmp_path)
    args = [
        "format=fp16",
        "model=hf",
        f"model.id={tiny_model_dir}",
        "stages=[quantize,evaluate]",
        "eval.n_tokens=65536",
        "eval.ctx_len=128",
        "eval.stride=128",
    ]
    proc = subprocess.Popen(
        QRUN + args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # quantized: the job goes on to its evaluate stage
        if list(cache.glob("artifacts/*/.entry.json")):
            break
        time.sleep(0.1)
    runs = mlflow_runs(tmp_path / "mlflow.db")[1]
    assert len(runs) == 1 and runs[0].info.status == "RUNNING", proc.communicate()[0][-3000:]
    run = runs[0]
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0, out[-3000:]
    client, _ = mlflow_runs(tmp_path / "mlflow.db")
    assert client.get_run(run.info.run_id).info.status == "KILLED", out[-3000:]
    assert not list(cache.glob("*/.tmp-*"))


def test_a_run_with_a_stale_heartbeat_on_another_host_is_closed_by_the_next_job(tmp_path, cache_dir, tiny_model_dir):
    args = ["format=fp32", "model=hf", f"model.id={tiny_model_dir}", "stages=[quantize]"]
    first = run_job(args, tmp_path, cache_dir)
    assert first.returncode == 0, first.line
    client, runs = mlflow_runs(tmp_path / "mlflow.db")
    key = runs[0].data.tags["qrun.job_key"]
    exp = runs[0].info.experiment_id
    dead = client.create_run(exp, run_name="fp32", tags={"qrun.job_key": key, **_owner_tags("node-17", 4242, 3600)})
    live = client.create_run(exp, run_name="fp32", tags={"qrun.job_key": key, **_owner_tags("node-18", 4242, 10)})
    second = run_job(args, tmp_path, cache_dir)  # resumes: reuses the finished run, closes the orphan
    assert second.returncode == 0 and second.result["reused"], second.line
    closed = client.get_run(dead.info.run_id)
    assert closed.info.status == "KILLED" and "heartbeat" in closed.data.tags["error"]
    assert client.get_run(live.info.run_id).info.status == "RUNNING"  # a fresh heartbeat: that job still runs


@pytest.mark.slow
def test_a_killed_sweeps_parent_run_is_closed_by_the_next_sweep(tmp_path, cache_dir, tiny_model_dir):
    tracker = _tracker(tmp_path / "mlflow.db")  # the store and experiment, as qrun makes them
    client, exp = tracker.client, tracker.experiment_id
    sweep = {"qrun.sweep": "true"}
    here = socket.gethostname()
    dead_parent = client.create_run(exp, run_name="sweep killed", tags={**sweep, **_owner_tags(here, _dead_pid(), 0)})
    child = client.create_run(
        exp, run_name="fp16", tags={"mlflow.parentRunId": dead_parent.info.run_id, **_owner_tags(here, _dead_pid(), 0)}
    )
    remote_parent = client.create_run(
        exp, run_name="sweep on a dead node", tags={**sweep, **_owner_tags("node-9", 1, 3600)}
    )
    live_parent = client.create_run(exp, run_name="sweep running", tags={**sweep, **_owner_tags(here, os.getpid(), 0)})
    proc = run_qrun(
        ["-m", "format=fp32", "model=hf", f"model.id={tiny_model_dir}", "stages=[quantize]"], tmp_path, cache_dir
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = {r.info.run_id: r.info.status for r in mlflow_runs(tmp_path / "mlflow.db")[1]}
    assert status[dead_parent.info.run_id] == status[child.info.run_id] == status[remote_parent.info.run_id] == "KILLED"
    assert status[live_parent.info.run_id] == "RUNNING"
    assert list(status.values()).count("FINISHED") == 2  # the new sweep's parent and its job


def test_the_run_ends_even_when_logging_the_error_fails(tmp_path, cache_dir, tiny_model_dir, monkeypatch):
    from hydra import compose, initialize_config_dir

    from runner import job
    from runner.config.schema import register_configs
    from runner.tracking import Tracker

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "format=fp32",
                "model=hf",
                f"model.id={tiny_model_dir}",
                "stages=[quantize,no_such_stage]",
                f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                f"cache.dir={cache_dir}",
            ],
        )

    def store_gone(self, text, name):
        raise OSError(f"cannot write {name}: the artifact store is gone")

    monkeypatch.setattr(Tracker, "log_text", store_gone)
    result = job.run(cfg, tmp_path / "job", None, [])
    assert result["status"] == "FAILED"
    client, runs = mlflow_runs(tmp_path / "mlflow.db")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "no_such_stage" in runs[0].data.tags["error"]  # the tag went in before the artifact failed


def test_a_sweep_terminated_mid_job_ends_parent_and_job_killed(tmp_path, cache_dir, tiny_model_dir):
    tiny = [a for a in TINY_ARGS if not a.startswith("eval.n_tokens=")]
    args = ["-m", "format=fp32,fp16", "model=hf", f"model.id={tiny_model_dir}", *tiny, "eval.n_tokens=65536"]
    env = qrun_env(cache_dir)
    seed_store(tmp_path)
    proc = subprocess.Popen(
        QRUN + args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # the sweep's parent run exists (the store is set up)
        if list(tmp_path.glob("multirun/*/*/0_fp32")):
            break
        time.sleep(0.1)
    while time.time() < deadline and proc.poll() is None:  # the first job's run exists
        if len(mlflow_runs(tmp_path / "mlflow.db")[1]) == 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    statuses = sorted(r.info.status for r in mlflow_runs(tmp_path / "mlflow.db")[1])
    assert statuses == ["KILLED", "KILLED"], out[-3000:]  # the parent and the job that ran
