"""Without CUDA, the GPU formats, engines and profiles fail with one line, before any work (the job in-process)."""

import pytest
import torch

from helpers import mlflow_runs, run_job

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without CUDA gives")

CASES = [
    (["format=exl2_4_0bpw"], "error: format: format exl2_4_0bpw (EXL2, exllamav2) needs a CUDA GPU"),
    (
        ["format=exl2", "format.bpw=5.0", "hardware=h100"],
        "error: format: format exl2 (EXL2, exllamav2) needs a CUDA GPU",
    ),
    (["format=gptq_int4", "format.sym=false", "format.engine=vllm"], "error: format.sym: vLLM refuses asymmetric GPTQ"),
    (
        ["format=fp16", "format.engine=exllamav2", "hardware=cuda"],
        "error: format.engine: the exllamav2 engine needs a CUDA GPU",
    ),
    (["format=fp16", "hardware=rtx3090x2"], "error: hardware.device: 'cuda' needs a CUDA GPU"),
    (["format=exl2", "format.bpw=9.5"], "error: format.bpw: 9.5 is outside what EXL2 can reach"),
]


@pytest.mark.parametrize("args,first_words", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_one_line_error_before_any_work(args, first_words, tmp_path):
    cache = tmp_path / "cache"
    out = run_job(args + ["eval=quick", "benchmark=quick"], tmp_path, cache)
    assert out.returncode == 2, out.line
    assert out.line.startswith(first_words) and " -- fix: " in out.line, out.line
    assert "\n" not in out.line and "CUDA_HOME" not in out.line
    client, runs = mlflow_runs(out.db)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "error.txt" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert not (cache / "models").exists() and not (cache / "artifacts").exists()  # nothing was converted or quantized
