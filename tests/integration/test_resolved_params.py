"""What a job decides from the model and the hardware profile is a param of its run: the eval baseline (the preset
eval.baseline=auto resolved to, its dtype, where it ran, why) and the group size a calibrated INT format was
quantized with (format.group_size: null). The tiny model on the CPU, through the same job as qrun."""

import json
from pathlib import Path

from helpers import CALIB_SMALL, TINY_ARGS, fresh_cache, mlflow_runs, run_job
from runner.metrics import (
    PARAM_BASELINE_DTYPE,
    PARAM_BASELINE_FORMAT,
    PARAM_BASELINE_PLACEMENT,
    PARAM_BASELINE_WHY,
    PARAM_GROUP_SIZE,
    PARAM_GROUP_SIZE_WHY,
)


def test_a_gptq_job_logs_its_resolved_group_size_and_baseline(tiny_model_dir, tmp_path):
    args = ["model=hf", f"model.id={tiny_model_dir}", "format=gptq_int4", "stages=[quantize,evaluate]"]
    cache = fresh_cache(tmp_path / "cache")
    out = run_job([*args, *CALIB_SMALL, *TINY_ARGS, "eval.bootstrap.resamples=0"], tmp_path, cache)
    assert out.returncode == 0, out.line
    _, (run,) = mlflow_runs(out.db)
    p = run.data.params
    assert p["format.group_size"] == "None" and p["eval.baseline"] == "auto"  # the config, as composed
    # the tiny Llama: hidden 256 (q/k/v, gate/up, o_proj inputs), intermediate 512 (down_proj input)
    assert p[PARAM_GROUP_SIZE] == "128"
    assert p[PARAM_GROUP_SIZE_WHY] == "128: divides every quantized input width [256, 512]"
    assert (p[PARAM_BASELINE_FORMAT], p[PARAM_BASELINE_DTYPE]) == ("fp32", "float32")
    assert p[PARAM_BASELINE_PLACEMENT] == "cpu"
    assert p[PARAM_BASELINE_WHY] == "auto on the CPU: fp32, the most exact reference"
    folder = Path(run.data.tags["artifact.path"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["resolved"]["group_size"] == 128 and manifest["quantize_dtype"] == "float32"
    assert json.loads((folder / "config.json").read_text())["quantization_config"]["group_size"] == 128  # the files
