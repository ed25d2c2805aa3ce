"""End to end through the real `qrun` app on a tiny random Llama, into a real MLflow SQLite store."""

import json

import pytest

from helpers import TINY_ARGS, TINY_SWEEP_FORMATS, assert_benchmarked, mlflow_runs, run_job

METRICS = [
    "quality/ppl",
    "quality/ppl_delta_pct",
    "quality/kld_mean",
    "quality/kld_p99",
    "quality/top1_agree",
    "size/bytes",
    "size/bits_per_weight",
    "size/compression_vs_fp16",
    "perf/load_s",
    "perf/prefill_tok_s",
    "perf/decode_tok_s",
    "perf/ttft_s_p50",
    "perf/latency_s_p50",
    "perf/latency_s_p95",
    "perf/throughput_tok_s",
    "perf/peak_rss_bytes",
    "time/quantize_s",
    "time/evaluate_s",
    "time/benchmark_s",
]


def test_sweep_logs_parent_and_a_child_per_format(tiny_sweep):
    client, runs = mlflow_runs(tiny_sweep.db)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2  # the sweep, and the q8_0-on-two-engines sweep after it
    assert len(tiny_sweep.jobs) == len(TINY_SWEEP_FORMATS)
    assert {r.data.tags["mlflow.parentRunId"] for r in tiny_sweep.jobs} == {tiny_sweep.parent.info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert sorted(r.data.params["format.name"] for r in tiny_sweep.jobs) == sorted(TINY_SWEEP_FORMATS)


def test_children_have_metrics_params_tags_artifacts(tiny_sweep):
    client, _ = mlflow_runs(tiny_sweep.db)
    for run in (tiny_sweep.by_format[f] for f in ("fp32", "fp16", "bf16")):
        m, p, t = run.data.metrics, run.data.params, run.data.tags
        missing = [k for k in METRICS if k not in m]
        assert not missing, missing
        assert m["quality/ppl"] > 1 and 0 <= m["quality/top1_agree"] <= 1 and m["quality/kld_mean"] >= 0
        assert m["perf/peak_rss_bytes"] > 50e6
        assert_benchmarked(m)
        for key in (
            "eval.ctx_len",
            "eval.stride",
            "eval.n_tokens",
            "eval.add_bos",
            "eval.corpus_sha256",
            "model.id",
            "hardware.threads",
            "format.engine",
        ):
            assert key in p, key
        assert p["eval.n_tokens"] == "1024" and len(p["eval.corpus_sha256"]) == 64
        for key in ("git.sha", "git.dirty", "version.torch", "version.transformers", "host.cpu"):
            assert t.get(key), key
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"hydra", "manifest.json", "results.json"} <= names
        hydra_files = {a.path for a in client.list_artifacts(run.info.run_id, "hydra")}
        assert {"hydra/config.yaml", "hydra/overrides.yaml"} <= hydra_files


def test_numbers_are_consistent_across_formats(tiny_sweep):
    by = {name: run.data.metrics for name, run in tiny_sweep.by_format.items()}
    fp32, fp16, bf16 = by["fp32"], by["fp16"], by["bf16"]
    # the baseline compared with itself
    assert fp32["quality/kld_mean"] == 0 and fp32["quality/top1_agree"] == 1 and fp32["quality/ppl_delta_pct"] == 0
    assert fp32["size/bits_per_weight"] == pytest.approx(32.0)
    assert fp16["size/bits_per_weight"] == pytest.approx(16.0) and bf16["size/bits_per_weight"] == pytest.approx(16.0)
    assert fp16["size/compression_vs_fp16"] == pytest.approx(1.0, rel=0.01)
    assert fp32["size/bytes"] == pytest.approx(2 * fp16["size/bytes"], rel=0.01)
    # fp16 keeps more mantissa than bf16: it must drift less from fp32
    assert 0 < fp16["quality/kld_mean"] < bf16["quality/kld_mean"]
    assert abs(fp16["quality/ppl_delta_pct"]) < 1.0
    for m in by.values():
        assert m["perf/latency_s_p50"] <= m["perf/latency_s_p95"] + 1e-9
        assert m["perf/ttft_s_p50"] < m["perf/latency_s_p50"]


def test_sweep_summary_is_printed_and_logged(tiny_sweep):
    out = tiny_sweep.proc.stdout
    assert f"quant-runner: {len(TINY_SWEEP_FORMATS)} job(s)" in out
    for fmt in TINY_SWEEP_FORMATS:
        assert f"\n{fmt} " in out
    assert "baseline 'fp32'" in out and "MLflow: sqlite:///" in out
    summaries = list(tiny_sweep.cwd.glob("multirun/*/*/summary.txt"))
    assert len(summaries) == 2  # one per sweep


def test_rerun_uses_the_cache(tiny_sweep, tiny_model_dir, tmp_path):
    out = run_job(
        ["format=fp16", "model=hf", f"model.id={tiny_model_dir}", "stages=[quantize,evaluate]", *TINY_ARGS],
        tiny_sweep.copy_store(tmp_path),
        tiny_sweep.cache,
    )
    assert out.returncode == 0, out.line
    _, runs = mlflow_runs(out.db)
    latest = max(runs, key=lambda r: r.info.start_time)
    assert latest.data.tags["cache.artifact"] == "hit"
    assert "perf/decode_tok_s" not in latest.data.metrics and "quality/ppl" in latest.data.metrics
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert results["manifest"]["format"] == "fp16"


def test_artifact_loads_in_plain_transformers(tiny_sweep):
    import subprocess
    import sys

    manifests = [
        p for p in tiny_sweep.cache.glob("artifacts/*/manifest.json") if json.loads(p.read_text())["format"] == "fp16"
    ]
    assert manifests
    code = (
        "import sys, torch; from transformers import AutoModelForCausalLM as M; "
        "m = M.from_pretrained(sys.argv[1]); assert m.dtype == torch.float16, m.dtype; "
        "print(m(torch.tensor([[1, 5, 9]])).logits.shape)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(manifests[0].parent)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch.Size([1, 3," in proc.stdout
