"""On a CUDA machine with the exl2 and vllm extras: the tiny model through EXL2 and vLLM, end to end."""

import json

import pytest
import torch

from helpers import TINY_ARGS, mlflow_runs, run_qrun

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CALIB = ["calibration=quick", "calibration.n_samples=8", "calibration.seq_len=128"]


def _finished(tmp_path, n):
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    children = [r for r in runs if "format.name" in r.data.params]
    assert len(children) == n and all(r.info.status == "FINISHED" for r in children)
    return {r.data.params["format.name"]: r.data.metrics for r in children}


def test_exl2_two_bitrates_share_one_measurement(tmp_path, cache_dir, tiny_model_dir):
    proc = run_qrun(
        [
            "-m",
            "model=hf",
            f"model.id={tiny_model_dir}",
            "format=exl2_3_0bpw,exl2_6_0bpw",
            "hardware=cuda",
            *CALIB,
            *TINY_ARGS,
        ],
        tmp_path,
        cache_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = _finished(tmp_path, 2)
    assert len(list((cache_dir / "exl2-measurements").iterdir())) == 1
    for m in metrics.values():
        assert 0 < m["quality/ppl"] < 1e4 and 0 <= m["quality/kld_mean"] < 5 and m["perf/decode_tok_s"] > 0
    assert metrics["exl2_6_0bpw"]["quality/kld_mean"] <= metrics["exl2_3_0bpw"]["quality/kld_mean"]
    manifests = [
        json.loads(p.read_text()) for p in (cache_dir / "artifacts").glob("*/manifest.json") if "exl2" in p.read_text()
    ]
    assert sorted(m["exl2"]["measurement_reused"] for m in manifests) == [False, True]


def test_vllm_fp16_matches_the_torch_baseline(tmp_path, cache_dir, tiny_model_dir):
    proc = run_qrun(
        ["model=hf", f"model.id={tiny_model_dir}", "format=fp16_vllm", "hardware=cuda", *TINY_ARGS], tmp_path, cache_dir
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = _finished(tmp_path, 1)["fp16_vllm"]
    assert abs(m["quality/ppl_delta_pct"]) < 1.0 and m["quality/top1_agree"] > 0.95 and m["quality/kld_mean"] < 0.01
    assert m["perf/prefill_tok_s"] > 0 and m["perf/decode_tok_s"] > 0
