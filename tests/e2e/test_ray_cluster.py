"""A sweep on an existing two-node Ray cluster (hydra/launcher=ray_cluster): both nodes run jobs, every job finishes.

The two nodes are two `ray start` on this machine, each with one CPU, its own temp dir, working directory and
environment: neither has the test's cwd or QRUN_* variables, as a node of a real cluster has not. So the sweep
passes what docs/scale-out.md says the nodes must share as absolute paths (sweep dir, cache, SQLite store).
"""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from helpers import ROOT, children, free_port, mlflow_runs, need, run_qrun, side_by_side_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = Path(sys.executable).with_name("ray")
FORMATS = ["fp32", "fp16", "bf16", "gguf_f16", "gguf_q8_0", "gguf_q4_0", "gguf_q4_k_m", "gguf_q2_k"]


def _stop(groups, within_s: float = 5.0) -> None:
    """Ends the process groups of our own `ray start` (raylet, GCS, workers), TERM then KILL. Not `ray stop`: it
    kills every Ray process of the machine by name, another test's or user's instance included."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for g in groups:
            try:
                os.killpg(g, sig)
            except ProcessLookupError:
                pass
        end = time.time() + within_s
        while time.time() < end and any(_alive(g) for g in groups):
            time.sleep(0.2)


def _alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture
def ray_cluster(tmp_path):
    """A head and a worker node on 127.0.0.1, one CPU each: (address, the environment a client needs)."""
    need(RAY.exists(), f"the ray CLI ({RAY})")
    # Unix socket paths (<temp dir>/session_*/sockets/plasma_store) must stay under 108 bytes: a short dir in /tmp.
    temp = Path(tempfile.mkdtemp(prefix="qr-ray-", dir="/tmp"))
    port = free_port()
    # Token authentication, as Ray enables it for a new cluster where ~/.ray/auth_token exists: every node and the
    # client share the token, and ~/.ray is neither read nor written.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    node_env = {k: v for k, v in os.environ.items() if not k.startswith(("QRUN_", "RAY_", "MLFLOW_"))}
    node_env.update(auth, PYTHONPATH=str(ROOT))  # the runner installed on every node
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats"]
    nodes = {
        "head": [
            "--head",
            f"--port={port}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-port={free_port()}",
            "--include-dashboard=false",
        ],
        "worker": [f"--address=127.0.0.1:{port}"],
    }
    groups = []
    try:
        for name, args in nodes.items():
            (temp / name).mkdir()
            start = subprocess.Popen(
                [str(RAY), "start", *args, *common, f"--temp-dir={temp / name}"],
                cwd=temp / name,
                env=node_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # its daemons stay in this process group: _stop ends them by its id
            )
            groups.append(start.pid)
            out, _ = start.communicate(timeout=180)
            assert start.returncode == 0, f"ray start ({name}):\n{out[-3000:]}"
        yield f"127.0.0.1:{port}", auth
    finally:
        _stop(groups)
        shutil.rmtree(temp, ignore_errors=True)


def test_sweep_runs_on_both_nodes_of_a_ray_cluster(tmp_path, empty_cache, tiny_model_dir, ray_cluster):
    address, auth = ray_cluster
    proc = run_qrun(
        [
            "-m",
            "hydra/launcher=ray_cluster",
            f"hydra.launcher.ray.init.address={address}",
            f"hydra.sweep.dir={tmp_path / 'multirun'}",
            f"cache.dir={empty_cache}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            *side_by_side_sweep(FORMATS, tiny_model_dir),
        ],
        tmp_path,
        empty_cache,
        env=auth,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    jobs = children(tmp_path / "mlflow.db")
    assert sorted(r.data.params["format.name"] for r in jobs) == sorted(FORMATS)
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    assert len({r.data.tags["mlflow.parentRunId"] for r in jobs}) == 1 and len(runs) == len(FORMATS) + 1
    nodes = {r.data.tags.get("qrun.ray_node_id") for r in jobs}
    assert None not in nodes and len(nodes) == 2, nodes  # every job in a Ray task, and both nodes ran some
