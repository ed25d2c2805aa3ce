"""Bad input for the weight-only formats: one line naming the key and the fix, exit 2, nothing cached."""
import importlib.util
import os
import shutil
import subprocess

import pytest

from helpers import QRUN, ROOT, mlflow_runs, hiding_packages

pytestmark = pytest.mark.quantlib

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
    cfg = LlamaConfig(vocab_size=512, hidden_size=192, intermediate_size=512, num_hidden_layers=1, num_attention_heads=3,
                      num_key_value_heads=1, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    return out


def _fails(args, model_dir, tmp_path, env=None, pythonpath=()):
    cache = tmp_path / "cache"
    env = dict(os.environ, QRUN_CACHE_DIR=str(cache), PYTHONPATH=os.pathsep.join([*map(str, pythonpath), str(ROOT)]), **(env or {}))
    proc = subprocess.run(QRUN + ["model=hf", f"model.id={model_dir}", "stages=[quantize]", *CALIB, *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = [l for l in proc.stderr.strip().splitlines() if l.strip()][-1]
    assert line.startswith("error: ") and " -- fix: " in line, line
    _, runs = mlflow_runs(tmp_path / "mlflow.db")
    assert [r.info.status for r in runs] == ["FAILED"]
    assert not list(cache.glob("artifacts/*")), "a failed job left an artifact in the cache"
    return line


@pytest.mark.parametrize("fmt,key", [("gptq_int4", "format.group_size"), ("awq_int4", "format.q_group_size")])
def test_group_size_must_divide_the_layer_width(fmt, key, wide_576ish_model, tmp_path):
    line = _fails([f"format={fmt}", f"{key}=128"], wide_576ish_model, tmp_path)
    assert line.startswith(f"error: {key}: 128 does not divide the input width 192")
    assert f"use {key}=64 or 32 (divides every layer width)" in line


@pytest.mark.parametrize("args,key,choices", [
    (["format=gptq_int4", "format.backend=llmcompressor", "format.bits=3"], "format.bits", "[4, 8]"),
    (["format=gptq_int4", "format.bits=5"], "format.bits", "[2, 3, 4, 8]"),
    (["format=awq_int4", "format.backend=gptqmodel", "format.w_bit=8"], "format.w_bit", "[4]"),
])
def test_bits_the_backend_cannot_write(args, key, choices, tiny_model_dir, tmp_path):
    line = _fails(args, tiny_model_dir, tmp_path)
    assert line.startswith(f"error: {key}: ") and "not supported by backend" in line and choices in line


def test_calibration_text_shorter_than_n_samples_x_seq_len(tiny_model_dir, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Shall I compare thee to a summer's day? Thou art more lovely and more temperate. " * 20)
    line = _fails(["format=gptq_int4", "calibration=file", f"calibration.corpus.path={short}"], tiny_model_dir, tmp_path)
    assert line.startswith("error: calibration.n_samples: the calibration text has ")
    assert "8 x 128 = 1024" in line and "calibration.seq_len" in line


def test_hub_calibration_without_the_hub(tiny_model_dir, tmp_path):
    line = _fails(["format=gptq_int4", "calibration=wikitext2", "calibration.n_samples=8", "calibration.seq_len=128"],
                  tiny_model_dir, tmp_path, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert line.startswith("error: calibration.corpus.dataset: could not read 'Salesforce/wikitext'")
    assert "calibration=packaged" in line


@pytest.mark.skipif(importlib.util.find_spec("awq") is not None, reason="autoawq is installed here")
def test_missing_optional_extra_names_it(tiny_model_dir, tmp_path):
    line = _fails(["format=awq_int4", "format.backend=autoawq"], tiny_model_dir, tmp_path)
    assert line.startswith("error: format.backend: backend 'autoawq' needs the Python package 'awq'")
    assert "'.[autoawq]'" in line


def test_missing_default_extra_names_it(tiny_model_dir, tmp_path):
    """gptqmodel made unimportable for the run (as in an install without the `gptq` extra)."""
    hide = hiding_packages(tmp_path, "gptqmodel")
    line = _fails(["format=gptq_int4"], tiny_model_dir, tmp_path, pythonpath=[hide])
    assert line.startswith("error: format.backend: backend 'gptqmodel' needs the Python package 'gptqmodel'")
    assert "'.[gptq]'" in line
