"""The GGUF family end to end on the tiny Llama: convert once, K-quants, llama.cpp eval/bench, bad input."""

import json
import shutil
import subprocess
import sys

import pytest

from helpers import STOCK_LLAMA_CPP_PRELUDE, TINY_ARGS, assert_benchmarked, mlflow_runs, run_job, run_qrun

TYPES = ["f16", "q8_0", "q4_k_m", "q2_k"]


@pytest.fixture(scope="module")
def gguf_sweep(tiny_sweep):
    """The session's tiny sweep: fp32 and the four GGUF types, in a cache of its own (conversions are counted)."""
    return tiny_sweep.cwd, tiny_sweep.cache, tiny_sweep.proc, tiny_sweep.by_format


def _manifests(cache):
    return {
        json.loads(p.read_text())["format"]: (p.parent, json.loads(p.read_text()))
        for p in cache.glob("artifacts/*/manifest.json")
    }


def test_conversion_ran_once_for_all_types(gguf_sweep):
    _, cache, _, by = gguf_sweep
    assert len(list((cache / "gguf_base").iterdir())) == 1
    assert all(by[f"gguf_{t}"].info.status == "FINISHED" for t in TYPES)


def test_f16_gguf_perplexity_matches_torch_within_half_a_percent(gguf_sweep):
    *_, by = gguf_sweep
    torch_ppl = by["fp32"].data.metrics["quality/ppl"]
    gguf_ppl = by["gguf_f16"].data.metrics["quality/ppl"]
    assert abs(gguf_ppl / torch_ppl - 1) < 0.005, (gguf_ppl, torch_ppl)
    assert by["gguf_f16"].data.metrics["quality/top1_agree"] > 0.97


def test_fewer_bits_smaller_files_more_divergence(gguf_sweep):
    *_, by = gguf_sweep
    m = {t: by[f"gguf_{t}"].data.metrics for t in TYPES}
    sizes = [m[t]["size/bytes"] for t in TYPES]
    assert sizes == sorted(sizes, reverse=True)
    assert m["f16"]["size/bits_per_weight"] == pytest.approx(16.0, rel=0.01)
    assert m["q8_0"]["size/bits_per_weight"] == pytest.approx(8.5, rel=0.02)
    assert m["q8_0"]["quality/kld_mean"] < m["q4_k_m"]["quality/kld_mean"] < m["q2_k"]["quality/kld_mean"]
    for t in TYPES:
        assert_benchmarked(m[t])
        assert m[t]["perf/ttft_s_p50"] <= m[t]["perf/latency_s_p95"]


def test_real_tensor_types_are_recorded(gguf_sweep):
    _, cache, proc, by = gguf_sweep
    manifests = _manifests(cache)
    q8 = manifests["gguf_q8_0"][1]["tensor_types"]
    assert "Q8_0" in q8 and q8["Q8_0"]["params_pct"] > 90
    q4 = manifests["gguf_q4_k_m"][1]["tensor_types"]
    assert "Q4_K" in q4 and ("Q6_K" in q4 or "Q5_K" in q4)  # Q4_K_M mixes in higher-precision tensors
    assert by["gguf_q4_k_m"].data.params["artifact.contents"].startswith("Q4_K")
    assert "What the files really store" in proc.stdout and "gguf_q2_k:" in proc.stdout


def test_files_load_in_stock_llama_cpp_without_runner(gguf_sweep):
    _, cache, _, _ = gguf_sweep
    code = STOCK_LLAMA_CPP_PRELUDE + (
        "import sys; from llama_cpp import Llama; "
        "llm = Llama(model_path=sys.argv[1], n_ctx=64, verbose=False); "
        "print('n_vocab', llm.n_vocab()); "
        "print('generated', llm('To be', max_tokens=4, temperature=0)['usage']['completion_tokens'])"
    )
    for fmt, (folder, manifest) in _manifests(cache).items():
        if not fmt.startswith("gguf_"):
            continue
        proc = subprocess.run(
            [sys.executable, "-c", code, str(folder / manifest["weight_files"][0])],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, (fmt, proc.stderr[-1500:])
        assert "n_vocab 512" in proc.stdout
        assert int(proc.stdout.split("generated ")[1].split()[0]) >= 1, (fmt, proc.stdout)  # it generated tokens


def _ggml_runs_amx() -> bool:
    import llama_cpp as lc

    return "AMX_INT8 = 1" in lc.llama_print_system_info().decode()


def _stock_llama_cpp_logprobs(gguf, ids):
    """Log-probs of one window from a context made the way llama.cpp's own tools make it: its default params,
    only size and threads set (no runner code, no llama-cpp-python `Llama` class)."""
    import llama_cpp as lc
    import numpy as np

    lc.llama_backend_init()
    mparams = lc.llama_model_default_params()
    mparams.n_gpu_layers = 0
    mparams.use_extra_bufts = not _ggml_runs_amx()  # stock llama.cpp segfaults in its AMX buffer: as the engine does
    model = lc.llama_model_load_from_file(str(gguf).encode(), mparams)
    cparams = lc.llama_context_default_params()
    cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = len(ids)
    cparams.n_threads = cparams.n_threads_batch = 2
    ctx = lc.llama_init_from_model(model, cparams)
    batch = lc.llama_batch_init(len(ids), 0, 1)
    for i, token in enumerate(ids):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, i, 1, 1
        batch.seq_id[i][0] = 0
    batch.n_tokens = len(ids)
    assert lc.llama_decode(ctx, batch) == 0
    n_vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(model))
    logits = np.ctypeslib.as_array(lc.llama_get_logits(ctx), shape=(len(ids), n_vocab)).astype(np.float64)
    lc.llama_batch_free(batch)
    lc.llama_free(ctx)
    lc.llama_model_free(model)
    return (
        logits
        - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
        - logits.max(1, keepdims=True)
    )


def test_engine_runs_the_gguf_as_stock_llama_cpp_does(gguf_sweep):
    """llama-cpp-python's Llama() turns flash attention off where llama.cpp's default (auto) turns it on for a CPU,
    which moves the log-probs about as much as Q8_0 itself does: the engine must give stock llama.cpp's numbers,
    and name how flash attention resolved."""
    from types import SimpleNamespace

    import numpy as np

    from runner.engines.llama_cpp import LlamaCppLoaded

    _, cache, _, by = gguf_sweep
    folder, manifest = _manifests(cache)["gguf_q8_0"]
    gguf = folder / manifest["weight_files"][0]
    ids = [int(t) for t in np.random.default_rng(0).integers(3, 250, 128)]
    loaded = LlamaCppLoaded(str(gguf), SimpleNamespace(threads=2, n_gpu_layers=0), n_ctx=128)
    try:
        got, flash_attn = loaded.logprobs(ids), getattr(loaded, "flash_attn", None)
    finally:
        loaded.close()
    np.testing.assert_allclose(got, _stock_llama_cpp_logprobs(gguf, ids), atol=1e-4)
    assert flash_attn in ("enabled", "disabled")
    amx = "; weight repacking off (llama.cpp's AMX buffer crashes here)" if _ggml_runs_amx() else ""
    assert (
        by["gguf_q8_0"].data.params["engine.kernel"] == f"flash attention {flash_attn} (llama.cpp's default: auto){amx}"
    )
    # the serving benchmark's server (llama-cpp-python's, whose Llama() forces it off) is told the same
    from runner.benchmark.servers import llama_cpp_server

    hardware = SimpleNamespace(threads=2, n_gpu_layers=0)
    spec = llama_cpp_server.spec(
        SimpleNamespace(path=folder, manifest=manifest),
        SimpleNamespace(path=folder),
        SimpleNamespace(prompt_tokens=16, gen_tokens=8),
        hardware,
        "127.0.0.1",
        1,
    )
    assert spec.cmd[spec.cmd.index("--flash_attn") + 1] == str(flash_attn == "enabled")


def test_weights_stay_out_of_llama_cpps_amx_buffer_where_ggml_runs_amx(monkeypatch, gguf_sweep):
    """llama.cpp's AMX weight buffer segfaults on the first decode (Q8_0 on AMX Xeons): the engine and the server
    keep the weights in the plain CPU buffer wherever this ggml build reports AMX, and repack as stock elsewhere."""
    from types import SimpleNamespace

    import llama_cpp as lc

    from runner.benchmark.servers import llama_cpp_server
    from runner.engines import llama_cpp as engine

    _, cache, _, _ = gguf_sweep
    folder, manifest = _manifests(cache)["gguf_q8_0"]
    artifact, hw = SimpleNamespace(path=folder, manifest=manifest), SimpleNamespace(threads=1, n_gpu_layers=0)
    seen = []
    load = lc.llama_model_load_from_file
    monkeypatch.setattr(
        lc, "llama_model_load_from_file", lambda path, p: seen.append(p.use_extra_bufts) or load(path, p)
    )
    for info, repack in ((b"CPU : AVX512 = 1 | AMX_INT8 = 1 | ", False), (b"CPU : AVX2 = 1 | AMX_INT8 = 0 | ", True)):
        monkeypatch.setattr(lc, "llama_print_system_info", lambda info=info: info)
        lc.llama_model_free(engine.load_model(str(folder / manifest["weight_files"][0]), hw))
        cmd = llama_cpp_server.spec(
            artifact, SimpleNamespace(path=folder), SimpleNamespace(prompt_tokens=16, gen_tokens=8), hw, "127.0.0.1", 1
        ).cmd
        assert seen[-1] is repack and (cmd[1:3] == ["-m", "llama_cpp.server"]) is repack, (info, cmd[:3])
        assert ("use_extra_bufts = False" in cmd[2]) is not repack


@pytest.mark.slow
def test_imatrix_changes_the_result_and_is_cached(tiny_sweep, tiny_model_dir, tmp_path):
    cache = tiny_sweep.cache
    calib = ["calibration=quick", "calibration.n_samples=4", "calibration.seq_len=64"]
    args = ["model=hf", f"model.id={tiny_model_dir}", "stages=[quantize]", *calib, *TINY_ARGS]
    proc = run_qrun(
        ["-m", "format=gguf_q4_k_m_imatrix,gguf_q4_k_m_imatrix", "format.quant_type=q4_k_m,q3_k_m", *args],
        tiny_sweep.copy_store(tmp_path),
        cache,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((cache / "imatrix").iterdir())) == 1  # computed once for both types
    manifests = [json.loads(p.read_text()) for p in cache.glob("artifacts/*/manifest.json")]
    with_im = [m for m in manifests if m.get("imatrix") and m["quant_type"] == "q4_k_m"]
    plain = [m for m in manifests if m["format"] == "gguf_q4_k_m"]
    assert with_im and plain
    assert with_im[0]["imatrix"]["n_tensors"] == 2 * 7 + 1  # 7 linear layers x 2 blocks + the untied lm_head
    assert with_im[0]["imatrix"]["calibration_tokens"] == 4 * 64

    def file_sha(m):
        return m["files"][m["weight_files"][0]]["sha256"]

    assert file_sha(with_im[0]) != file_sha(plain[0])


# --- bad input -------------------------------------------------------------------------------------


def test_unknown_quant_type(tmp_path, cache_dir, tiny_model_dir):
    out = run_job(
        ["format=gguf_q4_k_m", "format.quant_type=q9_z", "model=hf", f"model.id={tiny_model_dir}"], tmp_path, cache_dir
    )
    assert out.returncode == 2 and out.line.startswith("error: format.quant_type:") and "q4_k_m" in out.line


@pytest.mark.parametrize("damage", ["truncated", "not_gguf"])
def test_bad_gguf_input_file(tmp_path, cache_dir, gguf_sweep, damage):
    _, gcache, _, _ = gguf_sweep
    folder, manifest = _manifests(gcache)["gguf_q8_0"]
    bad = tmp_path / "model.gguf"
    if damage == "truncated":
        data = (folder / manifest["weight_files"][0]).read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad.write_text("definitely not a gguf file")
    out = run_job(["model=gguf", f"model.id={bad}", "format=gguf_q4_k_m"], tmp_path, cache_dir)
    assert out.returncode == 2
    line = out.line
    assert line.startswith("error: model.id:") and (
        "truncated" in line if damage == "truncated" else "not a GGUF" in line
    )
    _, runs = mlflow_runs(out.db)
    assert [r.info.status for r in runs] == ["FAILED"]


def test_unsupported_architecture_leaves_nothing_in_cache(tmp_path, tiny_model_dir, empty_cache):
    model = tmp_path / "odd_model"
    shutil.copytree(tiny_model_dir, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["architectures"] = ["TotallyNewForCausalLM"]
    (model / "config.json").write_text(json.dumps(cfg))
    cache = empty_cache
    out = run_job(["model=hf", f"model.id={model}", "format=gguf_q8_0", "stages=[quantize]"], tmp_path, cache)
    assert out.returncode == 2
    line = out.line
    assert line.startswith("error: model.id:") and "does not support" in line and "TotallyNewForCausalLM" in line
    assert not list(cache.glob("gguf_base/*")) and not list(cache.glob("artifacts/*"))
    assert not list(cache.glob("**/.tmp-*"))
