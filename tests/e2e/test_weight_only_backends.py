"""The non-default backends of GPTQ and INT8 on the tiny Llama (quantize stage only): each writes the
checkpoint layout it promises, a fraction of the fp32 size, that plain transformers loads and generates from."""

import json
from pathlib import Path

import pytest

from helpers import mlflow_runs, reload_without_runner, run_qrun

pytestmark = pytest.mark.quantlib

CASES = [
    ("gptq_int4", "llmcompressor", "compressed-tensors"),
    ("int8", "bitsandbytes", "bitsandbytes"),
    ("int8", "llmcompressor", "compressed-tensors"),
]
CALIB = ["calibration=quick", "calibration.n_samples=8", "calibration.seq_len=128"]


@pytest.mark.parametrize("fmt,backend,method", CASES)
def test_backend_writes_a_loadable_checkpoint(fmt, backend, method, tiny_model_dir, cache_dir, tmp_path):
    proc = run_qrun(
        [
            f"format={fmt}",
            f"format.backend={backend}",
            "model=hf",
            f"model.id={tiny_model_dir}",
            "stages=[quantize]",
            *CALIB,
        ],
        tmp_path,
        cache_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    artifact = Path(runs[0].data.tags["artifact.path"])
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert (
        manifest["backend"] == backend
        and manifest["weight_bytes"] < 0.5 * (tiny_model_dir / "model.safetensors").stat().st_size
    )
    assert json.loads((artifact / "config.json").read_text())["quantization_config"]["quant_method"] == method
    out = reload_without_runner(artifact, tiny_model_dir, tmp_path)
    assert out["quant_method"] == method
    assert out["generated"] == 4 and out["top1"] > 0.5 and out["rel_err"] < 0.35, out
