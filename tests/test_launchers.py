"""Jobs in other processes: joblib, a local Ray instance on loopback, a remote MLflow tracking server."""
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import TINY_ARGS, mlflow_runs, run_qrun

FAST = ["stages=[quantize,evaluate]", "hardware.threads=1", *TINY_ARGS]


def _check_sweep(client, runs, n):
    parents = [r for r in runs if r.data.tags.get("qrun.sweep") == "true"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == n
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({c.data.tags["qrun.pid"] for c in children}) >= 1


@pytest.mark.parametrize("launcher", ["local_parallel", "ray_local"])
def test_parallel_launchers_keep_parent_child_runs_and_cache(tmp_path, cache_dir, tiny_model_dir, launcher):
    proc = run_qrun(["-m", f"hydra/launcher={launcher}", "format=fp32,fp16", "model=hf", f"model.id={tiny_model_dir}", *FAST],
                    tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = mlflow_runs(tmp_path / "mlflow.db")
    _check_sweep(client, runs, 2)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len({c.data.tags["qrun.pid"] for c in children} | {str(os.getpid())}) >= 2  # not this process
    assert "quant-runner: 2 job(s)" in proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "server-artifacts")]
    server = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not come up in 120 s")
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_sweep_logs_to_a_remote_tracking_server(tmp_path, cache_dir, tiny_model_dir, mlflow_server):
    proc = run_qrun(["-m", "tracking=server", f"tracking.uri={mlflow_server}", "format=fp32,fp16", "model=hf",
                     f"model.id={tiny_model_dir}", *FAST], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("quant-runner")
    runs = client.search_runs([exp.experiment_id])
    _check_sweep(client, runs, 2)
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert "quality/ppl" in child.data.metrics
    assert "manifest.json" in {a.path for a in client.list_artifacts(child.info.run_id)}  # uploaded through the server
    assert list((tmp_path / "server-artifacts").rglob("manifest.json"))
