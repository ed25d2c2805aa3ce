"""Composing the config and resuming a finished job never import torch or transformers.

Each check runs the real entry point in a fresh interpreter and reads that interpreter's own
sys.modules at exit (atexit also runs on sys.exit), so nothing this test process imported counts.
"""

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT, run_qrun

HEAVY = ("torch", "transformers")
REPORT = (
    "import atexit, sys\n"
    f"atexit.register(lambda: print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), flush=True))\n"
)
QRUN = REPORT + "sys.argv = ['qrun'] + sys.argv[1:]\nfrom runner.cli import main\nmain()\n"


def _run(code, args, cwd, cache_dir):
    env = dict(os.environ, QRUN_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    heavy = [line for line in proc.stdout.splitlines() if line.startswith("HEAVY=")]
    assert heavy, f"no report from the child (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc, heavy[-1][len("HEAVY=") :]


def test_importing_the_app_and_the_job_loads_no_ml_library(tmp_path, cache_dir):
    proc, heavy = _run(REPORT + "import runner.config.schema, runner.job, runner.cli\n", [], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert heavy == ""


def test_cfg_job_composes_without_ml_libraries(tmp_path, cache_dir):
    proc, heavy = _run(QRUN, ["--cfg", "job", "format=gptq_int4"], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "family: gptq" in proc.stdout and "group_size: null" in proc.stdout  # the schema's values, composed
    assert heavy == ""


@pytest.mark.slow
def test_rerun_of_a_finished_job_is_reused_without_ml_libraries(tmp_path, cache_dir, tiny_model_dir):
    args = [
        "model=hf",
        f"model.id={tiny_model_dir}",
        "format=fp32",
        "stages=[quantize]",
        "hydra.run.dir=outputs/${now:%H-%M-%S-%f}",
    ]
    first = run_qrun(args, tmp_path, cache_dir)
    assert first.returncode == 0, first.stderr[-3000:]

    proc, heavy = _run(QRUN, args, tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "outputs").glob("*/run.json"))]
    assert [r.get("reused", False) for r in records] == [False, True], records
    assert heavy == ""
