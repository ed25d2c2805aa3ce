"""Engine identity: each job runs on its own format.engine, even when jobs share one cached artifact."""

import pytest

from helpers import TINY_ARGS, mlflow_runs, run_job


@pytest.fixture(scope="module")
def q8_on_two_engines(tiny_sweep):
    """The session's tiny sweep ran gguf_q8_0 on llama.cpp, then a sweep of it on llama_cpp (reused) and torch."""
    return tiny_sweep.two_engines_proc, tiny_sweep.q8_by_engine


def test_two_jobs_sharing_one_artifact_ran_on_two_engines(q8_on_two_engines):
    _, by = q8_on_two_engines
    assert sorted(by) == ["llama_cpp", "torch"]
    lc, pt = by["llama_cpp"], by["torch"]
    assert lc.info.status == pt.info.status == "FINISHED"
    assert lc.data.tags["artifact.path"] == pt.data.tags["artifact.path"]  # one file...
    assert pt.data.tags["cache.artifact"] == "hit"  # ...made once
    for name, run in by.items():
        assert run.data.tags["engine.name"] == name
    assert "llama-cpp-python " in lc.data.tags["engine.version"]
    assert "torch " in pt.data.tags["engine.version"] and "transformers " in pt.data.tags["engine.version"]
    # different engines on the same weights: close, never bit-identical
    m_lc, m_pt = lc.data.metrics, pt.data.metrics
    assert m_lc["quality/ppl"] != m_pt["quality/ppl"] and m_lc["quality/kld_mean"] != m_pt["quality/kld_mean"]
    assert m_lc["quality/ppl"] == pytest.approx(m_pt["quality/ppl"], rel=0.05)
    assert m_lc["size/bytes"] == m_pt["size/bytes"]


def test_stream_params_are_logged(q8_on_two_engines):
    proc, by = q8_on_two_engines
    assert "KLD on llama_cpp, torch: full-vocabulary log-probs" in proc.stdout  # the printed summary
    for run in by.values():
        p = run.data.params
        assert p["eval.tokenizer"] == "hf" and float(p["eval.chars_per_token"]) > 1.5
        # eval.add_bos is null (auto) by default: the tiny model's saved tokenizer adds no BOS
        assert (p["eval.add_bos"], p["eval.add_bos_source"]) == ("False", "tokenizer")
        assert p["eval.baseline_engine"] == "torch"


def test_same_artifact_on_another_engine_is_not_the_baseline(tiny_model_dir, tiny_sweep, tmp_path):
    """The baseline shortcut (KLD exactly 0) needs the baseline's artifact AND its engine."""
    args = [
        "format=gguf_f16",
        "eval.baseline=gguf_f16",
        "model=hf",
        f"model.id={tiny_model_dir}",
        "stages=[quantize,evaluate]",
        *TINY_ARGS,
    ]
    for engine in ("llama_cpp", "torch"):
        out = run_job([*args, f"format.engine={engine}"], tmp_path, tiny_sweep.cache)
        assert out.returncode == 0, out.line
    by = {r.data.params["format.engine"]: r for r in mlflow_runs(out.db)[1]}
    lc, pt = by["llama_cpp"].data, by["torch"].data
    assert lc.tags["artifact.path"] == pt.tags["artifact.path"]
    assert lc.params["eval.baseline_engine"] == "llama_cpp"
    assert lc.metrics["quality/kld_mean"] == 0 and lc.metrics["quality/top1_agree"] == 1  # the baseline itself
    assert pt.metrics["quality/kld_mean"] > 0 and pt.metrics["quality/ppl"] != lc.metrics["quality/ppl"]


def test_llama_cpp_engine_on_a_safetensors_format_is_one_line(tiny_model_dir, cache_dir, tmp_path):
    out = run_job(
        [
            "format=fp32",
            "format.engine=llama_cpp",
            "model=hf",
            f"model.id={tiny_model_dir}",
            "stages=[quantize,evaluate]",
            *TINY_ARGS,
        ],
        tmp_path,
        cache_dir,
    )
    assert out.returncode == 2
    assert out.line.startswith(
        "error: format.engine: llama_cpp does not run the torch_dtype format (fp32) -- fix: "
        "use format.engine=torch or exllamav2 or vllm"
    )


# --- the summary says what KLD is, per engine ----------------------------------------------------------


def _logged_runs(tmp_path, rows):
    """Real MLflow runs (SQLite) carrying the params and metrics the summary reads."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("summary")
    common = {
        "eval.n_scored": "1000",
        "eval.corpus": "c",
        "eval.ctx_len": "128",
        "eval.stride": "128",
        "eval.add_bos": "True",
        "eval.add_bos_source": "tokenizer",
        "eval.corpus_sha256": "0" * 64,
        "eval.baseline": "fp32",
        "eval.baseline_engine": "torch",
        "eval.kld_topk": "64",
        "eval.tokenizer": "hf",
    }
    for name, engine, chars_per_token in rows:
        run = client.create_run(exp)
        logged = {
            "format.name": name,
            "format.engine": engine,
            "eval.chars_per_token": chars_per_token,
            # what the evaluate stage logs: vLLM hands back its top-128 log-probs, the others the whole vocabulary
            "eval.logprobs": "top-128" if engine == "vllm" else "full",
            "eval.tokens_plausible": str(float(chars_per_token) >= 1.5),
        }
        for k, v in {**common, **logged}.items():
            client.log_param(run.info.run_id, k, v)
        client.log_metric(run.info.run_id, "quality/kld_mean", 0.01)
        client.set_terminated(run.info.run_id)
    return client.search_runs([exp])


def test_summary_labels_kld_per_engine(tmp_path):
    from runner.report.summary import render

    runs = _logged_runs(
        tmp_path, [("fp16", "torch", "3.1"), ("gguf_q4_k_m", "llama_cpp", "3.1"), ("fp16_vllm", "vllm", "3.1")]
    )
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lines = render(runs, store, "summary").splitlines()
    full = [l for l in lines if l.startswith("KLD on llama_cpp, torch:")]
    vllm = [l for l in lines if l.startswith("KLD on vllm")]
    assert len(full) == 1 and "lower bound" in full[0]
    assert len(vllm) == 1 and "over-state" in vllm[0] and "top-128" in vllm[0] and "lower bound" not in vllm[0]
    assert not any("WARNING" in l for l in lines)
    torch_only = render([r for r in runs if r.data.params["format.engine"] == "torch"], store, "summary")
    assert "KLD on vllm" not in torch_only and "lower bound" in torch_only


def test_summary_warns_about_character_level_streams(tmp_path):
    from runner.report.summary import render

    text = render(_logged_runs(tmp_path, [("fp16", "torch", "1.02")]), f"sqlite:///{tmp_path / 'mlflow.db'}", "summary")
    assert "WARNING fp16: the eval stream has 1.02 characters per token" in text
