"""Formats beyond GPTQ/AWQ/INT8/NF4: torchao W8A8-dynamic on the tiny Llama through the real qrun app,
its reload in a fresh process without `runner`, and the one-line refusals (int4 scheme, missing extra)."""

import json
from pathlib import Path

import pytest

from helpers import assert_benchmarked, reload_without_runner

pytestmark = pytest.mark.quantlib


@pytest.fixture(scope="module")
def w8a8(weight_only_sweep):
    _, proc, by_name = weight_only_sweep
    return by_name["torchao_w8a8"], proc.stdout


def test_w8a8_dynamic_runs_with_its_int8_kernel_and_real_contents(w8a8):
    run, stdout = w8a8
    m = run.data.metrics
    assert run.info.status == "FINISHED"
    assert m["quality/kld_mean"] < 0.01 and m["quality/top1_agree"] > 0.5, m
    # int8 linears (+ fp32 row scales) beside fp32 embeddings/lm_head/norms: ~40 % of the tiny model's parameters
    assert 10 < m["size/bits_per_weight"] < 22, m["size/bits_per_weight"]
    assert_benchmarked(m)
    manifest = json.loads((Path(run.data.tags["artifact.path"]) / "manifest.json").read_text())
    assert manifest["kernel_on_quantizing_machine"].startswith("torch._int_mm ")
    types = manifest["tensor_types"]
    assert set(types) == {"Int8Tensor", "float32"} and types["Int8Tensor"]["tensors"] == 14  # 2 layers x 7 linears
    assert 8 < types["Int8Tensor"]["bits_per_weight"] < 8.5  # int8 + one fp32 scale and int8 zero per row
    assert "Int8Tensor" in run.data.params["artifact.contents"] and "torchao_w8a8: Int8Tensor" in stdout


def test_w8a8_artifact_reloads_without_runner(w8a8, tiny_model_dir, tmp_path):
    artifact = Path(w8a8[0].data.tags["artifact.path"])
    assert [p.name for p in artifact.glob("*.safetensors")] and not list(artifact.glob("*.bin")) + list(
        artifact.glob("*.pt")
    )
    out = reload_without_runner(artifact, tiny_model_dir, tmp_path)
    assert out["quant_method"] == "torchao"
    assert out["rel_err"] < 0.05 and out["top1"] > 0.9, out


def test_w8a8_contents_count_a_tied_embedding_once(tmp_path):
    """SmolLM2 ties lm_head to embed_tokens: torchao's metadata names both, the file stores one."""
    import torch
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, TorchAoConfig

    from runner.formats.torchao_schemes import tensor_types

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "base")
    AutoModelForCausalLM.from_pretrained(
        tmp_path / "base",
        dtype=torch.float32,
        quantization_config=TorchAoConfig(quant_type=Int8DynamicActivationInt8WeightConfig()),
    ).save_pretrained(tmp_path / "q")
    types = tensor_types(tmp_path / "q")
    assert (
        types["Int8Tensor"]["tensors"] == 7 and types["float32"]["tensors"] == 4
    )  # embed + 2 layer norms + final norm
