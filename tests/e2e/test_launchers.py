"""Jobs in other processes: joblib, a local Ray instance on loopback, a remote MLflow tracking server."""

import os
import subprocess

import pytest

from helpers import QRUN, ROOT, TINY_ARGS, mlflow_runs

pytestmark = pytest.mark.ray

FAST = ["stages=[quantize,evaluate]", "hardware.threads=1", *TINY_ARGS]


def _run_qrun(args, tmp_path, cache_dir):
    """Like helpers.run_qrun, and also the pid of the launching `qrun` process (to tell where the jobs ran)."""
    env = dict(os.environ, QRUN_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    with subprocess.Popen(
        QRUN + list(args), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as p:
        out, err = p.communicate(timeout=900)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err), str(p.pid)


def _check_sweep(client, runs, n):
    """Returns the pids of the processes that ran the jobs (the qrun.pid tag of each child run)."""
    parents = [r for r in runs if r.data.tags.get("qrun.sweep") == "true"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == n
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
    return {c.data.tags["qrun.pid"] for c in children}


@pytest.mark.parametrize("launcher", ["local_parallel", "ray_local"])
def test_parallel_launchers_keep_parent_child_runs_and_cache(tmp_path, cache_dir, tiny_model_dir, launcher):
    proc, qrun_pid = _run_qrun(
        ["-m", f"hydra/launcher={launcher}", "format=fp32,fp16", "model=hf", f"model.id={tiny_model_dir}", *FAST],
        tmp_path,
        cache_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = mlflow_runs(tmp_path / "mlflow.db")
    job_pids = _check_sweep(client, runs, 2)
    assert len(job_pids) == 2 and qrun_pid not in job_pids, (job_pids, qrun_pid)  # two workers, neither the launcher
    assert "quant-runner: 2 job(s)" in proc.stdout


def test_sweep_logs_to_a_remote_tracking_server(tmp_path, cache_dir, tiny_model_dir, mlflow_server):
    proc, qrun_pid = _run_qrun(
        [
            "-m",
            "tracking=server",
            f"tracking.uri={mlflow_server}",
            "format=fp32,fp16",
            "model=hf",
            f"model.id={tiny_model_dir}",
            *FAST,
        ],
        tmp_path,
        cache_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("quant-runner")
    runs = client.search_runs([exp.experiment_id])
    assert _check_sweep(client, runs, 2) == {qrun_pid}  # the basic launcher runs the jobs in qrun itself
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert "quality/ppl" in child.data.metrics
    assert "manifest.json" in {a.path for a in client.list_artifacts(child.info.run_id)}  # uploaded through the server
    assert list((tmp_path / "server-artifacts").rglob("manifest.json"))
