"""The pre-flight fit check (runner/benchmark/fit.py): estimated from config.json alone, before quantizing."""

import pytest
from omegaconf import OmegaConf

from helpers import compose
from runner.benchmark import fit
from runner.report.data import Row
from runner.report.recommend import Constraints, recommend
from runner.tracking import SKIPPED_TAG

GIB = 1024**3
# Llama-3.1-8B's shapes (its config.json, weights not needed)
LLAMA_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
SEED = ["experiment=seed_table", "deployment=rtx3090x2_50users"]
TWO_8GB_CARDS = ["hardware.gpu_memory_bytes=8589934592", "hardware.memory_budget_bytes=15032385536"]


def _estimate(*overrides):
    return fit.estimate(compose([*SEED, *overrides]), LLAMA_8B, runtime_bytes=lambda engine: None)


def test_parameters_are_counted_from_the_shapes():
    counts = fit.param_counts(LLAMA_8B)
    assert counts.total == 8_030_261_248  # Llama-3.1-8B's published count
    assert counts.head == counts.embedding == 128256 * 4096  # untied: lm_head counted apart
    tied = fit.param_counts({**LLAMA_8B, "tie_word_embeddings": True})
    assert tied.head == 0 and tied.total == counts.total - counts.head


def test_bf16_8b_fits_two_24gb_cards_with_tensor_parallel_2():
    est = _estimate("format=bf16")
    assert (est.place.server, est.place.shards, est.place.replicas) == ("vllm", 2, 1)
    assert est.params()["fit.kv"].startswith("50 user(s) x 320 tokens")
    assert est.weights == pytest.approx(8_030_261_248 * 2 / 2)  # bf16, half on each card
    assert est.kv == pytest.approx(32 * 8 * 128 * 2 * 2 * 50 * 320 / 2)  # 50 users x 320 tokens, bf16 KV, sharded
    assert est.fits and est.capacity == pytest.approx(24 * GIB * 0.9)
    assert est.params()["fit.verdict"] == "fits"


def test_fp32_8b_does_not_fit_one_24gb_card():
    """fp32 weights alone are 29.9 GiB: without tensor parallelism each card (a data-parallel replica) holds them all.
    Sharded over both cards it is 15 GiB of weights per card and fits (see the next test)."""
    est = _estimate("format=fp32", "hardware.tensor_parallel_size=1")
    assert est.place.shards == 1  # each card holds a whole copy
    assert not est.fits and est.weights > 29 * GIB
    assert est.reason().startswith("does not fit: needs ")


def test_fp32_8b_per_card_need_is_twice_bf16s():
    bf16, fp32 = _estimate("format=bf16"), _estimate("format=fp32")
    assert fp32.weights == pytest.approx(2 * bf16.weights) and fp32.kv == pytest.approx(2 * bf16.kv)
    assert fp32.total < fp32.capacity  # 18.4 GiB of 21.6: tensor parallel 2 makes room even for fp32


def test_two_8gb_cards_reject_bf16_with_the_reason():
    est = _estimate("format=bf16", *TWO_8GB_CARDS)
    assert not est.fits
    reason = est.reason()
    assert "one card's 8.0 GiB x gpu_memory_utilization 0.9 = 7.2 GiB" in reason
    assert "weights 7.5 GiB" in reason and "per GPU (2 shards)" in reason
    assert "\n" not in reason


def test_quantized_formats_need_their_bits_not_the_models():
    bf16, gptq, gguf = _estimate("format=bf16"), _estimate("format=gptq_int4"), _estimate("format=gguf_q4_k_m")
    linear = fit.param_counts(LLAMA_8B).linear
    rest = 8_030_261_248 - linear
    assert OmegaConf.select(compose([*SEED, "format=gptq_int4"]), "format.group_size") is None  # left to the model
    group = 128  # Llama-3.1-8B's input widths per GPU at tensor parallel 2 (4096, 2048, 7168) all divide by 128
    assert gptq.weights == pytest.approx((linear * (4 + 20 / group) + rest * 16) / 8 / 2)
    assert gguf.weights == pytest.approx(8_030_261_248 * 4.85 / 8 / 2)  # llama.cpp's layers split over both cards
    assert gguf.place.server == "llama_server" and gguf.place.shards == 2
    assert gptq.weights < bf16.weights / 2.5


def test_cpu_estimates_add_the_engines_measured_runtime_and_judge_the_budget():
    cfg = compose(["format=fp32", "deployment=cpu_chat_4users", "deployment.memory_budget_bytes=100000000"])
    est = fit.estimate(cfg, LLAMA_8B, runtime_bytes=lambda engine: 300_000_000)
    assert est.place.where == "host" and est.runtime == 300_000_000
    assert not est.fits and "the memory budget 0.1 GiB" in est.reason()


def _row(fmt, tags=None, **metrics):
    params = {"format.name": fmt, "format.engine": "vllm", "hardware.name": "rtx3090x2"}
    return Row(run_id=fmt, status="FINISHED", params=params, metrics=metrics, tags=tags or {})


def test_a_skipped_format_is_listed_rejected_with_its_reason():
    d = compose(SEED).deployment
    skipped = _row("fp32", {SKIPPED_TAG: "does not fit: needs 33.7 GiB per GPU"})
    result = recommend([skipped], Constraints.of_scenario(d, 44 * GIB), d.prefer)
    assert result["choice"] is None
    assert result["rejected"] == {"fp32 @vllm": ["skipped before any work, does not fit: needs 33.7 GiB per GPU"]}
