"""AutoRound on the tiny Llama through the real qrun app: quantize -> evaluate -> benchmark, the
GPTQ v1 checkpoint's real contents, its reload in a fresh process without `runner`, and the one-line refusals."""

import json
from pathlib import Path

import pytest

from helpers import TINY_ARGS, assert_benchmarked, mlflow_runs, reload_without_runner, run_qrun

pytestmark = pytest.mark.quantlib

CALIB = ["calibration=quick", "calibration.n_samples=8", "calibration.seq_len=128"]
# the CPU preset, 2 SignRound steps (batch 4) per block; group 32 set (the tiny model's widths would resolve 128):
# the sizes below are worked out for it
FAST = ["format=autoround_int4_cpu", "format.iters=2", "format.group_size=32"]


@pytest.fixture(scope="module")
def autoround(tiny_model_dir, cache_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("autoround")
    proc = run_qrun([*FAST, "model=hf", f"model.id={tiny_model_dir}", *CALIB, *TINY_ARGS], cwd, cache_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = mlflow_runs(cwd / "mlflow.db")
    return runs[0], proc.stdout


def test_autoround_runs_end_to_end_with_real_contents(autoround):
    run, stdout = autoround
    m = run.data.metrics
    assert run.info.status == "FINISHED" and run.data.params["format.backend"] == "auto_round"
    assert m["quality/kld_mean"] < 0.01 and m["quality/top1_agree"] > 0.5, m
    assert abs(m["quality/ppl_delta_pct"]) < 5, m["quality/ppl_delta_pct"]
    # packed INT4 layers beside fp16 embeddings/lm_head/norms (~40 % of the tiny model's parameters)
    assert 5 < m["size/bits_per_weight"] < 9, m["size/bits_per_weight"]
    assert_benchmarked(m)
    artifact = Path(run.data.tags["artifact.path"])
    manifest = json.loads((artifact / "manifest.json").read_text())
    types = manifest["tensor_types"]
    assert (
        set(types) == {"GPTQ INT4 g32", "float16"} and types["GPTQ INT4 g32"]["tensors"] == 14
    )  # 2 layers x 7 linears
    assert (
        4.5 < types["GPTQ INT4 g32"]["bits_per_weight"] < 5.5
    )  # 4 bits + an fp16 scale and 4-bit zero per 32 (+ g_idx)
    assert manifest["tuning"] == {"iters": 2, "batch_size": 4, "lr": "1/iters"}
    assert (manifest["calibration"]["n_samples"], manifest["calibration"]["seq_len"]) == (8, 128)
    qc = json.loads((artifact / "config.json").read_text())["quantization_config"]
    assert (qc["quant_method"], qc["provider"], qc["bits"], qc["group_size"], qc["sym"], qc["iters"]) == (
        "gptq",
        "auto-round",
        4,
        32,
        True,
        2,
    )
    assert "GPTQ INT4 g32" in run.data.params["artifact.contents"] and "autoround_int4_cpu: GPTQ INT4 g32" in stdout


def test_autoround_artifact_reloads_without_runner(autoround, tiny_model_dir, tmp_path):
    artifact = Path(autoround[0].data.tags["artifact.path"])
    assert [p.name for p in artifact.glob("*.safetensors")] and not list(artifact.glob("*.bin")) + list(
        artifact.glob("*.pt")
    )
    assert not list(artifact.glob(".auto_round*")), "auto-round's export folder is left in the artifact"
    out = reload_without_runner(artifact, tiny_model_dir, tmp_path)
    assert out["quant_method"] == "gptq"
    assert out["rel_err"] < 0.35 and out["top1"] > 0.5, out
