"""Sweeps that survive reruns, kills, corrupt caches and failing jobs (real qrun, real MLflow)."""

import logging
import os
import signal
import subprocess
import time

import pytest

from helpers import QRUN, TINY_ARGS, TINY_SWEEP_FORMATS, children, mlflow_runs, qrun_env, run_job, run_qrun


@pytest.mark.slow
def test_rerun_of_a_finished_sweep_reuses_every_job(tiny_sweep, tmp_path):
    cwd = tiny_sweep.copy_store(tmp_path)
    n = len(TINY_SWEEP_FORMATS)
    first_jobs = len(children(cwd / "mlflow.db"))
    second = run_qrun(tiny_sweep.args, cwd, tiny_sweep.cache)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"Reused {n} finished run(s)" in second.stdout
    assert len(children(cwd / "mlflow.db")) == first_jobs  # no duplicate runs
    out = second.stdout + second.stderr  # Hydra sends log lines to stdout, progress bars to stderr
    assert "quantizing" not in out and "evaluate (" not in out and "already done in MLflow run" in out
    # resume=false runs them again
    third = run_qrun(tiny_sweep.args + ["resume=false", "stages=[quantize]"], cwd, tiny_sweep.cache)
    assert third.returncode == 0 and len(children(cwd / "mlflow.db")) == first_jobs + n


def test_changing_only_eval_settings_reuses_the_artifact(tiny_sweep, tmp_path, tiny_model_dir):
    out = run_job(
        [
            "format=fp16",
            "model=hf",
            f"model.id={tiny_model_dir}",
            "stages=[quantize,evaluate]",
            *TINY_ARGS,
            "eval.n_tokens=512",
        ],
        tmp_path,
        tiny_sweep.cache,
    )  # the sweep quantized fp16 with 1024 eval tokens
    assert out.returncode == 0, out.line
    (run,) = mlflow_runs(out.db)[1]
    assert run.data.params["eval.n_tokens"] == "512" and run.data.tags["cache.artifact"] == "hit"


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_completes_only_the_missing_jobs(tmp_path, tiny_model_dir, empty_cache):
    args = ["-m", "format=fp32,fp16,bf16", "model=hf", f"model.id={tiny_model_dir}", *TINY_ARGS]
    env = qrun_env(empty_cache)
    proc = subprocess.Popen(
        QRUN + args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 600
    while time.time() < deadline:  # kill as soon as the first job has finished
        if list(tmp_path.glob("multirun/*/*/*/run.json")) or proc.poll() is not None:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = [r for r in children(tmp_path / "mlflow.db") if r.info.status == "FINISHED"]
    assert len(done_before) >= 1
    assert not list(empty_cache.glob("*/.tmp-*/.entry.json"))  # nothing half-written looks complete

    rerun = subprocess.run(QRUN + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    runs = children(tmp_path / "mlflow.db")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted(r.data.params["format.name"] for r in finished) == ["bf16", "fp16", "fp32"]  # one each
    assert {r.info.run_id for r in done_before} <= {r.info.run_id for r in finished}  # reused, not redone
    assert not [r for r in runs if r.info.status == "RUNNING"]  # the killed job's run was closed (KILLED)


def test_corrupt_cache_entry_is_recomputed(tmp_path, tiny_model_dir, empty_cache, caplog):
    args = ["format=fp16", "model=hf", f"model.id={tiny_model_dir}", "stages=[quantize]", "resume=false"]
    assert run_job(args, tmp_path, empty_cache).returncode == 0
    weights = next(empty_cache.glob("artifacts/*/model.safetensors"))
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with caplog.at_level(logging.WARNING, logger="runner.cache"):
        out = run_job(args, tmp_path, empty_cache)
    assert out.returncode == 0, out.line
    assert "is corrupt" in caplog.text
    _, runs = mlflow_runs(out.db)
    assert max(runs, key=lambda r: r.info.start_time).data.tags["cache.artifact"] == "miss"
    assert next(empty_cache.glob("artifacts/*/model.safetensors")).read_bytes() == good


def test_qrun_cache_list_and_prune(tmp_path, tiny_model_dir, empty_cache, capsys):
    from runner.cache.cli import main as qrun_cache

    assert (
        run_job(
            ["format=fp16", "model=hf", f"model.id={tiny_model_dir}", "stages=[quantize]"], tmp_path, empty_cache
        ).returncode
        == 0
    )
    capsys.readouterr()
    cli = ["--dir", str(empty_cache)]
    assert qrun_cache(cli + ["list"]) == 0
    listing = capsys.readouterr().out
    assert "artifacts" in listing and "fp16" in listing
    qrun_cache(cli + ["prune", "--kind", "artifacts", "--dry-run"])
    assert "would delete artifacts/" in capsys.readouterr().out and list(empty_cache.glob("artifacts/*/.entry.json"))
    assert qrun_cache(cli + ["prune", "--kind", "artifacts"]) == 0
    assert (
        not list(empty_cache.glob("artifacts/*/.entry.json")) and list(empty_cache.glob("models/*")) == []
    )  # hf models are not cached
    assert qrun_cache(cli + ["prune"]) == 2 and "--kind" in capsys.readouterr().err
