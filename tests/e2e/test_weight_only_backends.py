"""The non-default backends of GPTQ and INT8 on the tiny Llama (quantize stage only): each writes the
checkpoint layout it promises, a fraction of the fp32 size, that plain transformers loads and generates from."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import mlflow_runs, run_qrun
from test_weight_only_e2e import RELOAD

pytestmark = pytest.mark.quantlib

CASES = [("gptq_int4", "llmcompressor", "compressed-tensors"), ("int8", "bitsandbytes", "bitsandbytes"),
         ("int8", "llmcompressor", "compressed-tensors")]
CALIB = ["calibration=quick", "calibration.n_samples=8", "calibration.seq_len=128"]


@pytest.mark.parametrize("fmt,backend,method", CASES)
def test_backend_writes_a_loadable_checkpoint(fmt, backend, method, tiny_model_dir, cache_dir, tmp_path):
    proc = run_qrun([f"format={fmt}", f"format.backend={backend}", "model=hf", f"model.id={tiny_model_dir}",
                     "stages=[quantize]", *CALIB], tmp_path, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    artifact = Path(runs[0].data.tags["artifact.path"])
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["backend"] == backend and manifest["weight_bytes"] < 0.5 * (tiny_model_dir / "model.safetensors").stat().st_size
    assert json.loads((artifact / "config.json").read_text())["quantization_config"]["quant_method"] == method
    proc = subprocess.run([sys.executable, "-c", RELOAD, str(artifact), str(tiny_model_dir)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["runner_imported"] and out["quant_method"] == method
    assert out["generated"] == 4 and out["top1"] > 0.5 and out["rel_err"] < 0.35, out
