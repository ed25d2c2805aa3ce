"""Sweeps that survive reruns, kills, corrupt caches and failing jobs (real qrun, real MLflow)."""
import os
import signal
import subprocess
import time


from helpers import QRUN, ROOT, TINY_ARGS, mlflow_runs, run_qrun


def _children(db):
    _, runs = mlflow_runs(db)
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def test_rerun_of_a_finished_sweep_reuses_every_job(tmp_path, cache_dir, tiny_model_dir):
    args = ["-m", "format=fp32,fp16", "model=hf", f"model.id={tiny_model_dir}", *TINY_ARGS]
    first = run_qrun(args, tmp_path, cache_dir)
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_qrun(args, tmp_path, cache_dir)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "Reused 2 finished run(s)" in second.stdout
    assert len(_children(tmp_path / "mlflow.db")) == 2  # no duplicate runs
    out = second.stdout + second.stderr  # Hydra sends log lines to stdout, progress bars to stderr
    assert "quantizing" not in out and "evaluate (" not in out and "already done in MLflow run" in out
    # resume=false runs them again
    third = run_qrun(args + ["resume=false", "stages=[quantize]"], tmp_path, cache_dir)
    assert third.returncode == 0 and len(_children(tmp_path / "mlflow.db")) == 4


def test_changing_only_eval_settings_reuses_the_artifact(tmp_path, cache_dir, tiny_model_dir):
    base = ["format=fp16", "model=hf", f"model.id={tiny_model_dir}", "stages=[quantize,evaluate]", *TINY_ARGS]
    assert run_qrun(base, tmp_path, cache_dir).returncode == 0
    proc = run_qrun(base + ["eval.n_tokens=512"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    newest = max(runs, key=lambda r: r.info.start_time)
    assert newest.data.params["eval.n_tokens"] == "512" and newest.data.tags["cache.artifact"] == "hit"


def test_sigkill_mid_sweep_then_rerun_completes_only_the_missing_jobs(tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"
    args = ["-m", "format=fp32,fp16,bf16", "model=hf", f"model.id={tiny_model_dir}", *TINY_ARGS]
    env = dict(os.environ, QRUN_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(QRUN + args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline:  # kill as soon as the first job has finished
        if list(tmp_path.glob("multirun/*/*/*/run.json")) or proc.poll() is not None:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = [r for r in _children(tmp_path / "mlflow.db") if r.info.status == "FINISHED"]
    assert len(done_before) >= 1
    assert not list(cache.glob("*/.tmp-*/.entry.json"))  # nothing half-written looks complete

    rerun = subprocess.run(QRUN + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    runs = _children(tmp_path / "mlflow.db")
    finished = [r for r in runs if r.info.status == "FINISHED"]
    assert sorted(r.data.params["format.name"] for r in finished) == ["bf16", "fp16", "fp32"]  # one each
    assert {r.info.run_id for r in done_before} <= {r.info.run_id for r in finished}  # reused, not redone
    assert not [r for r in runs if r.info.status == "RUNNING"]  # the killed job's run was closed (KILLED)


def test_corrupt_cache_entry_is_recomputed(tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"
    args = ["format=fp16", "model=hf", f"model.id={tiny_model_dir}", "stages=[quantize]", "resume=false"]
    assert run_qrun(args, tmp_path, cache).returncode == 0
    weights = next(cache.glob("artifacts/*/model.safetensors"))
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    proc = run_qrun(args, tmp_path, cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "is corrupt" in proc.stdout + proc.stderr
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    assert max(runs, key=lambda r: r.info.start_time).data.tags["cache.artifact"] == "miss"
    assert next(cache.glob("artifacts/*/model.safetensors")).read_bytes() == good


def test_missing_extra_fails_that_job_only_with_the_pip_command(tmp_path, cache_dir, tiny_model_dir):
    # hide llama-cpp-python from the job as if its extra were not installed
    shadow = tmp_path / "shadow" / "llama_cpp"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'llama_cpp'\")\n")
    env = dict(os.environ, QRUN_CACHE_DIR=str(cache_dir), PYTHONPATH=f"{shadow.parent}{os.pathsep}{ROOT}")
    args = ["-m", "format=fp32,gguf_q8_0", "model=hf", f"model.id={tiny_model_dir}", "stages=[quantize]"]
    proc = subprocess.run(QRUN + args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    by = {r.data.params["format.name"]: r for r in _children(tmp_path / "mlflow.db")}
    assert by["fp32"].info.status == "FINISHED" and by["gguf_q8_0"].info.status == "FAILED"
    assert "pip install -e '.[gguf]'" in by["gguf_q8_0"].data.tags["error"]
    assert "FAILED gguf_q8_0" in proc.stdout


def test_unknown_experiment(tmp_path, cache_dir):
    proc = run_qrun(["-m", "experiment=nope"], tmp_path, cache_dir)
    assert proc.returncode != 0 and "experiment/nope" in proc.stderr and "cpu_quick" in proc.stderr


def test_qrun_cache_list_and_prune(tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"
    assert run_qrun(["format=fp16", "model=hf", f"model.id={tiny_model_dir}", "stages=[quantize]"], tmp_path, cache).returncode == 0
    cli = [QRUN[0], "-m", "runner.cache_cli", "--dir", str(cache)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    listing = subprocess.run(cli + ["list"], capture_output=True, text=True, env=env)
    assert listing.returncode == 0 and "artifacts" in listing.stdout and "fp16" in listing.stdout
    dry = subprocess.run(cli + ["prune", "--kind", "artifacts", "--dry-run"], capture_output=True, text=True, env=env)
    assert "would delete artifacts/" in dry.stdout and list(cache.glob("artifacts/*/.entry.json"))
    subprocess.run(cli + ["prune", "--kind", "artifacts"], capture_output=True, text=True, env=env, check=True)
    assert not list(cache.glob("artifacts/*/.entry.json")) and list(cache.glob("models/*")) == []  # hf models are not cached
    bad = subprocess.run(cli + ["prune"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--kind" in bad.stderr
