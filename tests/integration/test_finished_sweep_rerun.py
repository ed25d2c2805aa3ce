"""Re-running a finished sweep: unchanged, it prints what it printed without composing or opening MLflow;
anything it was decided from that changed (the store, a model file) takes the ordinary path again."""

import os
import shutil
import subprocess
import sys

import pytest

from helpers import TINY_ARGS, mlflow_runs, qrun_env, run_qrun

REPLAYED = "nothing to run: this sweep finished unchanged"
HEAVY = ("mlflow", "torch", "transformers")
REPORT = (
    "import atexit, sys\n"
    f"atexit.register(lambda: print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), flush=True))\n"
)
QRUN = REPORT + "sys.argv = ['qrun'] + sys.argv[1:]\nfrom runner.cli import main\nmain()\n"


def _rerun(args, cwd, cache_dir):
    proc = subprocess.run(
        [sys.executable, "-c", QRUN, *args], cwd=cwd, env=qrun_env(cache_dir), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    heavy = [line for line in proc.stdout.splitlines() if line.startswith("HEAVY=")][-1][len("HEAVY=") :]
    return proc.stdout, heavy


@pytest.mark.slow
def test_an_unchanged_finished_sweep_replays_and_a_changed_one_runs(tmp_path, cache_dir, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    work = tmp_path / "work"
    work.mkdir()
    args = ["-m", "format=fp32,gguf_q8_0", "stages=[quantize,evaluate]", "model=hf", f"model.id={model}", *TINY_ARGS]
    first = run_qrun(args, work, cache_dir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert REPLAYED not in first.stdout

    out, heavy = _rerun(args, work, cache_dir)
    assert out.startswith(REPLAYED) and heavy == ""  # neither MLflow nor torch: nothing composed or opened
    table = first.stdout[first.stdout.index("quant-runner:") :].strip()
    assert table in out  # the summary and the decision, as the sweep printed them

    client, runs = mlflow_runs(work / "mlflow.db")
    parents_before = sum(r.data.tags.get("qrun.sweep") == "true" for r in runs)
    fp32 = next(r for r in runs if r.data.params.get("format.name") == "fp32")
    client.delete_run(fp32.info.run_id)  # the store changed since: the ordinary path notices the missing job
    out, _ = _rerun(args, work, cache_dir)
    assert REPLAYED not in out and "fp32: FINISHED" in out
    _, runs = mlflow_runs(work / "mlflow.db")
    assert sum(r.data.tags.get("qrun.sweep") == "true" for r in runs) == parents_before + 1

    out, _ = _rerun(args, work, cache_dir)  # stamped again by the run above
    assert out.startswith(REPLAYED)

    os.utime(model / "config.json")  # a model file touched: its jobs are decided anew (and reused or re-run)
    out, _ = _rerun(args, work, cache_dir)
    assert REPLAYED not in out and "quant-runner:" in out

    forced, _ = _rerun([*args, "resume=false"], work, cache_dir)
    assert REPLAYED not in forced
