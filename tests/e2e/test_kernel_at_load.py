"""The kernel that runs a torchao artifact is read where a job loads it (param engine.kernel), not from its manifest,
which only says what the quantizing machine would have run: a cached artifact may come from another CPU."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from helpers import TINY_ARGS, mlflow_runs, run_qrun

pytestmark = pytest.mark.quantlib

ELSEWHERE = "torch._int_mm s8s8 (AMX)  <- the machine that quantized it"


def this_cpus_int8_path() -> str:
    """u8s8 or s8s8: the branch torchao's int_scaled_matmul takes (AVX512-VNNI without AMX tiles: u8s8, on torch
    2.12+), read from the CPU's own flags in /proc/cpuinfo rather than from the checks the runner itself calls."""
    import torch

    lines = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")]
    if not lines:
        pytest.skip("needs /proc/cpuinfo (Linux) to read the CPU's instruction sets")
    flags = set(lines[0].split(":", 1)[1].split())
    vnni_only = "amx_tile" not in flags and "avx512_vnni" in flags
    return "u8s8" if vnni_only and tuple(map(int, torch.__version__.split(".")[:2])) >= (2, 12) else "s8s8"


def pretend_quantized_elsewhere(artifact: Path) -> None:
    """Rewrite the cached manifest's quantize-time kernel and re-register the file, so the cache serves it as valid."""
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["kernel_on_quantizing_machine"] = ELSEWHERE
    data = json.dumps(manifest, indent=2).encode()
    (artifact / "manifest.json").write_bytes(data)
    entry = json.loads((artifact / ".entry.json").read_text())
    entry["files"]["manifest.json"] = {
        **entry["files"]["manifest.json"],
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    (artifact / ".entry.json").write_text(json.dumps(entry))


@pytest.fixture(scope="module")
def two_runs(tiny_model_dir, cache_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("kernel_at_load")
    cache = shutil.copytree(cache_dir, cwd / "cache")  # its own copy: the session cache's artifact stays untouched
    args = ["format=torchao_w8a8", "model=hf", f"model.id={tiny_model_dir}", "stages=[quantize,evaluate]", *TINY_ARGS]
    first = run_qrun(args, cwd, cache)
    assert first.returncode == 0, first.stderr[-3000:]
    _, runs = mlflow_runs(cwd / "mlflow.db")
    pretend_quantized_elsewhere(Path(runs[0].data.tags["artifact.path"]))
    second = run_qrun([*args, "resume=false"], cwd, cache)
    assert second.returncode == 0, second.stderr[-3000:]
    _, runs = mlflow_runs(cwd / "mlflow.db")
    return sorted(runs, key=lambda r: r.info.start_time), first.stdout


def test_the_job_logs_the_kernel_read_on_this_machine(two_runs):
    (run, _), stdout = two_runs
    kernel = run.data.params["engine.kernel"]
    assert kernel.startswith(f"torch._int_mm {this_cpus_int8_path()} ")
    assert f"torchao_w8a8: {kernel}" in stdout  # the summary says which kernel ran it


def test_a_manifest_from_another_cpu_does_not_change_the_logged_kernel(two_runs):
    (first, second), _ = two_runs
    assert second.data.tags["cache.artifact"] == "hit"
    manifest = json.loads((Path(second.data.tags["artifact.path"]) / "manifest.json").read_text())
    assert manifest["kernel_on_quantizing_machine"] == ELSEWHERE  # the run used the rewritten manifest
    assert second.data.params["engine.kernel"] == first.data.params["engine.kernel"] != ELSEWHERE
