"""The real `qrun` process on bad input: the one printed line, the exit code, the runs it leaves.

Every other error path runs the same job in-process (helpers.run_job), which skips only this printing.
"""

import pytest
import torch

from helpers import TINY_ARGS, children, hiding_packages, last_line, mlflow_runs, run_qrun

CALIB = ["calibration=quick", "calibration.n_samples=8", "calibration.seq_len=128"]


def test_a_job_error_is_one_line_exit_2_and_a_failed_run(tmp_path, cache_dir):
    proc = run_qrun(["model=hf", f"model.id={tmp_path}/no/such/model"], tmp_path, cache_dir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = last_line(proc.stderr)
    assert line.startswith("error: model.id:") and "does not exist" in line and " -- fix: " in line
    assert "Traceback" not in proc.stderr
    client, runs = mlflow_runs(tmp_path / "mlflow.db")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "error.txt" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}


def test_a_config_typo_or_a_failing_launcher_is_one_line_naming_the_key(tmp_path, cache_dir):
    proc = run_qrun(["-m", "format=fp32,fp16", "benchmark.repeat=3"], tmp_path, cache_dir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [last_line(proc.stderr)]  # nothing but the line
    assert last_line(proc.stderr).startswith(
        "error: benchmark.repeat: no such key in benchmark -- fix: did you mean benchmark.repeats?"
    )
    assert not mlflow_runs(tmp_path / "mlflow.db")[1]  # refused at composition: no run exists

    # a launcher that fails once the sweep began (its parent run exists): one line, and the parent run FAILED
    proc = run_qrun(
        ["-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=0", "format=fp32,fp16"], tmp_path, cache_dir
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [last_line(proc.stderr)]
    assert (
        last_line(proc.stderr).startswith("error: hydra.launcher: the launcher failed (") and " -- fix: " in proc.stderr
    )
    assert [r.info.status for r in mlflow_runs(tmp_path / "mlflow.db")[1]] == ["FAILED"]


def test_failed_jobs_of_a_sweep_are_failed_and_the_others_run(tmp_path, cache_dir, tiny_model_dir):
    proc = run_qrun(
        [
            "-m",
            "model=hf",
            f"model.id={tiny_model_dir}",
            "format=fp32,fp16",
            "format.dtype=float32,int3",
            "stages=[quantize]",
            *TINY_ARGS,
        ],
        tmp_path,
        cache_dir,
    )
    assert proc.returncode == 1
    assert "job(s) of the sweep failed" in last_line(proc.stderr)
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    statuses = sorted(r.info.status for r in runs)
    assert statuses == ["FAILED", "FAILED", "FAILED", "FINISHED", "FINISHED"]  # parent + 2 bad dtypes failed
    assert "FAILED" in proc.stdout and "format.dtype" in proc.stdout


# format -> (the package hidden from the run, the extra its error names)
EXTRAS = {
    "gguf_q8_0": ("llama_cpp", "gguf"),
    "gptq_int4": ("gptqmodel", "gptq"),
    "awq_int4": ("llmcompressor", "llmcompressor"),
    "int8": ("torchao", "int8"),
    "nf4": ("bitsandbytes", "int8"),
    "torchao_w8a8": ("torchao", "int8"),
    "autoround_int4_cpu": ("auto_round", "autoround"),
}


def test_a_sweep_with_every_optional_extra_missing_fails_those_jobs_only(tmp_path, cache_dir, tiny_model_dir):
    hide = hiding_packages(tmp_path, *{package for package, _ in EXTRAS.values()})
    proc = run_qrun(
        [
            "-m",
            f"format=fp32,{','.join(EXTRAS)}",
            "model=hf",
            f"model.id={tiny_model_dir}",
            "stages=[quantize]",
            *CALIB,
        ],
        tmp_path,
        cache_dir,
        pythonpath=[hide],
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    by = {r.data.params["format.name"]: r for r in children(tmp_path / "mlflow.db")}
    assert by.pop("fp32").info.status == "FINISHED"
    assert sorted(by) == sorted(EXTRAS)
    for fmt, run in by.items():
        package, extra = EXTRAS[fmt]
        error = run.data.tags["error"]
        assert run.info.status == "FAILED" and f"'.[{extra}]'" in error and "pip install" in error, (fmt, error)
        if fmt != "gguf_q8_0":  # the weight-only families name the backend and the package it imports
            assert error.startswith("format.backend: backend '") and f"needs the Python package '{package}'" in error, (
                error
            )
        assert f"FAILED {fmt}" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message of a machine without GPUs (unit tests fake others)")
def test_a_sweep_on_a_cuda_profile_this_machine_lacks_stops_before_any_job(tmp_path, cache_dir):
    """The profile is checked against the machine's GPUs (NVML, else torch) as the sweep starts: on a machine
    without them one line on `hardware`, exit 2, no run."""
    proc = run_qrun(["-m", "format=fp32,fp16", "hardware=rtx3090x2"], tmp_path, cache_dir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [last_line(proc.stderr)]
    assert last_line(proc.stderr).startswith(
        "error: hardware: hardware=rtx3090x2 expects 2 x RTX 3090 (24.0 GiB each), this machine has no GPU"
    )
    assert not mlflow_runs(tmp_path / "mlflow.db")[1]
