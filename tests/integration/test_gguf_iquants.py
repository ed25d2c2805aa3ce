"""GGUF i-quants with an importance matrix on the tiny Llama: presets, real tensor mix, the missing-imatrix error."""

import json
import subprocess
import sys

import pytest

from helpers import TINY_ARGS, mlflow_runs, run_job, run_qrun

CALIB = ["calibration=quick", "calibration.n_samples=4", "calibration.seq_len=64"]


@pytest.mark.slow
def test_iq2_xs_end_to_end_with_its_dequantized_cross_check(tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"
    proc = run_qrun(
        [
            "format=gguf_iq2_xs",
            "model=hf",
            f"model.id={tiny_model_dir}",
            *CALIB,
            "stages=[quantize,evaluate,dequant_check]",
            *TINY_ARGS,
        ],
        tmp_path,
        cache,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    (run,) = runs
    m = run.data.metrics
    manifests = [json.loads(p.read_text()) for p in cache.glob("artifacts/*/manifest.json")]
    (manifest,) = [m for m in manifests if m["format"] == "gguf_iq2_xs"]  # the other one is the fp32 baseline
    types = manifest["tensor_types"]
    # the tiny model's rows are 256 wide: real IQ2_XS super-blocks, no IQ4_NL fallback for the linear layers
    assert "IQ2_XS" in types and types["IQ2_XS"]["params_pct"] > 50, types
    assert manifest["imatrix"]["calibration_tokens"] == 4 * 64
    assert 2.0 < m["size/bits_per_weight"] < 4.5
    assert run.data.params["artifact.contents"]
    # gguf-py dequantized the i-quant for torch, and the result is a real quantization loss
    assert m["quality/kld_mean_dequant"] > 0 and m["quality/kld_mean"] > 0
    assert run.data.tags["quality.kernel_vs_quantization"] in ("agree", "kernel_costs_quality", "kernel_gains_quality")
    # the file loads in stock llama.cpp, in a fresh process without the runner
    path = next(cache.glob("artifacts/*/model-iq2_xs.gguf"))
    code = (
        "import sys; from llama_cpp import Llama; llm = Llama(model_path=sys.argv[1], n_ctx=64, verbose=False); "
        "print('n_vocab', llm.n_vocab())"
    )
    load = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert load.returncode == 0 and "n_vocab 512" in load.stdout, load.stderr[-1500:]


@pytest.mark.parametrize("preset", ["gguf_iq2_xs"])
def test_low_bit_iquant_without_imatrix_is_one_line_before_work(tmp_path, tiny_model_dir, preset):
    cache = tmp_path / "cache"
    out = run_job(
        [f"format={preset}", "format.imatrix=false", "model=hf", f"model.id={tiny_model_dir}", *TINY_ARGS],
        tmp_path,
        cache,
    )
    assert out.returncode == 2, out.line
    assert out.line.startswith("error: format.imatrix:") and "format.imatrix=true" in out.line, out.line
    assert not list(cache.glob("gguf_base/*")) and not list(cache.glob("artifacts/*"))  # nothing converted
    _, runs = mlflow_runs(out.db)
    assert [r.info.status for r in runs] == ["FAILED"]


def test_every_iquant_preset_asks_for_an_imatrix():
    from runner.formats import load_format_preset
    from runner.formats.gguf.format import NEEDS_IMATRIX, QUANT_TYPES

    for preset in ("gguf_iq4_xs", "gguf_iq4_nl", "gguf_iq3_s", "gguf_iq2_xs"):
        fmt = load_format_preset(preset, "format")
        assert fmt.quant_type in QUANT_TYPES and fmt.imatrix is True, preset
    assert "iq2_xs" in NEEDS_IMATRIX and "iq4_xs" not in NEEDS_IMATRIX
