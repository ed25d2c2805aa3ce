"""A sweep as SLURM jobs: hydra/launcher=slurm (submitit) on a real one-node cluster on loopback.

scripts/slurm_local.sh starts munged, slurmctld and slurmd (Debian's slurm-wlm, `make slurm`) with their config,
state and logs in a temp folder; the sweep submits one job array through sbatch, each array task runs one qrun
job with the same python, and the jobs log into one SQLite store in the test's folder (one machine).
"""

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from helpers import ROOT, TINY_ARGS, mlflow_runs, need, run_qrun

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SCRIPT = ROOT / "scripts" / "slurm_local.sh"
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "scontrol")
FORMATS = ["fp32", "fp16", "bf16", "gguf_q8_0"]
FEATURE = "qrun_local"  # the node's feature (slurm_local.sh), asked for through the hardware profile


def _free_ports(n: int) -> list:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _tail(folder: Path, pattern: str, chars: int = 3000) -> str:
    """The ends of the files under folder matching pattern: what a failed job or daemon said."""
    out = []
    for path in sorted(folder.rglob(pattern)):
        if path.is_file():
            out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
    return "\n".join(out)


@pytest.fixture
def slurm_cluster():
    """SLURM_CONF of a one-node cluster (2 CPUs, 4 GiB, partition `debug`) on 127.0.0.1, stopped at teardown."""
    missing = [d for d in DAEMONS if not shutil.which(d) and not Path("/usr/sbin", d).exists()]
    need(not missing, f"slurm-wlm and munge (make slurm; missing: {', '.join(missing)})")
    need(os.geteuid() == 0, "root for a local SLURM cluster (slurmd starts each job as its submitting user)")
    # under /tmp with a short name: munged's socket path must fit in a unix socket address (108 bytes)
    folder = Path(tempfile.mkdtemp(prefix="qslurm", dir="/tmp"))
    ctld, slurmd = _free_ports(2)
    env = dict(os.environ, SLURMCTLD_PORT=str(ctld), SLURMD_PORT=str(slurmd), SLURM_NODE_FEATURES=FEATURE)
    try:
        start = subprocess.run(
            ["bash", str(SCRIPT), "start", str(folder)], env=env, capture_output=True, text=True, timeout=120
        )
        assert start.returncode == 0, start.stdout + start.stderr + _tail(folder / "log", "*.log")
        yield {"SLURM_CONF": str(folder / "slurm.conf"), "log": folder / "log"}
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def test_sweep_runs_as_slurm_jobs_with_the_hardware_profiles_request(
    tmp_path, cache_dir, tiny_model_dir, slurm_cluster
):
    conf = slurm_cluster["SLURM_CONF"]
    args = [
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.mem_gb=2",  # two jobs at once on the 4 GiB node
        "hydra.launcher.timeout_min=20",
        f"hardware.slurm_constraint={FEATURE}",
        f"format={','.join(FORMATS)}",
        "stages=[quantize,evaluate]",
        "hardware.threads=1",
        "model=hf",
        f"model.id={tiny_model_dir}",
        *TINY_ARGS,
    ]
    try:
        proc = run_qrun(args, tmp_path, cache_dir, timeout=1200, env={"SLURM_CONF": conf})
    except subprocess.TimeoutExpired:
        pytest.fail("the sweep did not end in 20 min:\n" + _tail(tmp_path, "*.err") + _tail(slurm_cluster["log"], "*"))
    assert proc.returncode == 0, proc.stderr[-3000:] + _tail(tmp_path, "*.err")

    # the script submitit handed to sbatch: one array of 4, its request taken from the hardware profile
    scripts = list(tmp_path.rglob(".submitit/*/*_submission.sh"))
    assert len(scripts) == 1, scripts
    sbatch = {line for line in scripts[0].read_text().splitlines() if line.startswith("#SBATCH ")}
    expected = {
        "--cpus-per-task=1",  # hardware.threads
        "--gpus-per-node=0",  # hardware.n_gpus of the cpu profile: no GPU
        f"--constraint={FEATURE}",  # hardware.slurm_constraint
        "--partition=debug",
        "--mem=2GB",
        "--array=0-3%4",
    }
    assert {f"#SBATCH {flag}" for flag in expected} <= sbatch, sorted(sbatch)

    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    parents = [r for r in runs if r.data.tags.get("qrun.sweep") == "true"]
    jobs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(jobs) == len(FORMATS), [r.data.tags for r in runs]
    assert {r.data.params["format.name"] for r in jobs} == set(FORMATS)
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs), [
        (r.data.tags.get("mlflow.runName"), r.info.status) for r in runs
    ]
    assert all("quality/ppl" in r.data.metrics for r in jobs)

    # each job ran as its own SLURM job (an array task has its own job id), one this cluster ran to the end
    ids = [r.data.tags.get("qrun.slurm_job_id") for r in jobs]
    assert all(ids) and len(set(ids)) == len(FORMATS), ids
    env = dict(os.environ, SLURM_CONF=conf)
    for job_id in ids:
        show = subprocess.run(
            ["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True, timeout=30
        ).stdout
        assert "JobState=COMPLETED" in show and f"Features={FEATURE}" in show and "NodeList=localhost" in show, show
