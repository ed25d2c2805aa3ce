"""Bad input for the weight-only formats (GPTQ, AWQ, AutoRound, torchao): one line naming the key and the fix, exit 2,
nothing cached. Each is refused before the library runs, so these need no quantization time."""

import importlib.util
import shutil
import sys

import pytest

from helpers import fresh_cache, mlflow_runs, run_job

CALIB = ["calibration=quick", "calibration.n_samples=8", "calibration.seq_len=128"]


@pytest.fixture(scope="module")
def wide_576ish_model(tiny_model_dir, tmp_path_factory):
    """Like SmolLM2 (hidden 576 = 4.5 x 128): hidden 192 = 1.5 x 128, so group size 128 cannot fit."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("hidden192")
    for f in tiny_model_dir.iterdir():
        if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
            shutil.copy2(f, out / f.name)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=1,
        num_attention_heads=3,
        num_key_value_heads=1,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    return out


def _fails(args, model_dir, tmp_path):
    cache = fresh_cache(tmp_path / "cache")
    out = run_job(["model=hf", f"model.id={model_dir}", "stages=[quantize]", *CALIB, *args], tmp_path, cache)
    assert out.returncode == 2, out.line
    line = out.line
    assert line.startswith("error: ") and " -- fix: " in line, line
    _, runs = mlflow_runs(out.db)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not list(cache.glob("artifacts/*")), "a failed job left an artifact in the cache"
    return line


@pytest.mark.parametrize("fmt,key", [("gptq_int4", "format.group_size"), ("awq_int4", "format.q_group_size")])
def test_group_size_must_divide_the_layer_width(fmt, key, wide_576ish_model, tmp_path):
    line = _fails([f"format={fmt}", f"{key}=128"], wide_576ish_model, tmp_path)
    assert line.startswith(f"error: {key}: 128 does not divide the input width 192")
    assert f"use {key}=64 or 32 (divides every layer width)" in line


@pytest.mark.parametrize(
    "args,key,choices",
    [
        (["format=gptq_int4", "format.backend=llmcompressor", "format.bits=3"], "format.bits", "[4, 8]"),
        (["format=gptq_int4", "format.bits=5"], "format.bits", "[2, 3, 4, 8]"),
        (["format=awq_int4", "format.backend=gptqmodel", "format.w_bit=8"], "format.w_bit", "[4]"),
    ],
)
def test_bits_the_backend_cannot_write(args, key, choices, tiny_model_dir, tmp_path):
    line = _fails(args, tiny_model_dir, tmp_path)
    assert line.startswith(f"error: {key}: ") and "not supported by backend" in line and choices in line


def test_calibration_text_shorter_than_n_samples_x_seq_len(tiny_model_dir, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Shall I compare thee to a summer's day? Thou art more lovely and more temperate. " * 20)
    line = _fails(
        ["format=gptq_int4", "calibration=file", f"calibration.corpus.path={short}"], tiny_model_dir, tmp_path
    )
    assert line.startswith("error: calibration.n_samples: the calibration text has ")
    assert "8 x 128 = 1024" in line and "calibration.seq_len" in line


def test_hub_calibration_without_the_hub(tiny_model_dir, tmp_path, monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
        for module in ("huggingface_hub.constants", "datasets.config"):  # both read the variables at import
            if hasattr(sys.modules.get(module), name):
                monkeypatch.setattr(sys.modules[module], name, True)
    line = _fails(
        ["format=gptq_int4", "calibration=wikitext2", "calibration.n_samples=8", "calibration.seq_len=128"],
        tiny_model_dir,
        tmp_path,
    )
    assert line.startswith("error: calibration.corpus.dataset: could not read 'Salesforce/wikitext'")
    assert "calibration=packaged" in line


@pytest.mark.skipif(importlib.util.find_spec("awq") is not None, reason="autoawq is installed here")
def test_missing_optional_extra_names_it(tiny_model_dir, tmp_path):
    line = _fails(["format=awq_int4", "format.backend=autoawq"], tiny_model_dir, tmp_path)
    assert line.startswith("error: format.backend: backend 'autoawq' needs the Python package 'awq'")
    assert "'.[autoawq]'" in line


@pytest.mark.parametrize(
    "arg,key,says",
    [
        ("format.iters=0", "format.iters", "use format.iters >= 1"),
        ("format.batch_size=0", "format.batch_size", "use format.batch_size >= 1"),
        ("format.lr=-0.01", "format.lr", "is not a learning rate"),
        ("format.group_size=48", "format.group_size", "use format.group_size=256 or 128 (divides every layer width)"),
    ],
)
def test_bad_autoround_settings_name_the_key(arg, key, says, tiny_model_dir, tmp_path):
    line = _fails(["format=autoround_int4_cpu", arg], tiny_model_dir, tmp_path)
    assert line.startswith(f"error: {key}: ") and says in line, line


def test_torchao_int4_scheme_is_refused_with_the_reason(tiny_model_dir, tmp_path):
    line = _fails(["format=torchao_w8a8", "format.scheme=int4_weight_only"], tiny_model_dir, tmp_path)
    assert line.startswith("error: format.scheme: 'int4_weight_only' cannot run from a saved artifact")
    assert "Int4OpaqueTensor" in line and "format=gguf_q4_0" in line
