"""The eval baseline resolved for the model and the hardware profile (runner/config/baseline.py), on the seed's command.

The seed's user runs `qrun -m experiment=seed_table deployment=rtx3090x2_50users model=hf model.id=<Llama 3.1 8B>`.
The rule, on a profile with GPUs (n_gpus cards, each capped at gpu_memory_bytes x gpu_memory_utilization for
weights): eval.baseline=auto is the model's own dtype (config.json), spread over the cards by accelerate within
that cap; fp32 only where 4 bytes x parameters fit n_gpus x the cap. On the CPU: fp32, as before.
"""

import json
from types import SimpleNamespace

import pytest

from helpers import compose
from runner.config import baseline
from runner.errors import UserError
from runner.quality import reference as reference_module
from runner.system.placement import GIB, placement

LLAMA_31_8B = {  # meta-llama/Llama-3.1-8B's config.json, the fields the rules read
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "num_hidden_layers": 32,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
N_PARAMS_8B = 8_030_261_248  # Llama 3.1 8B's parameter count (its safetensors headers): fp32 29.9 GiB, bf16 15.0 GiB
SEED = ["experiment=seed_table", "deployment=rtx3090x2_50users", "model=hf"]


def _model_dir(tmp_path, **changes):
    folder = tmp_path / "llama-3.1-8b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**LLAMA_31_8B, **changes}))
    return folder


def _seed(tmp_path, *more, **changes):
    folder = _model_dir(tmp_path, **changes)
    cfg = compose([*SEED, f"model.id={folder}", *more])
    return cfg, json.loads((folder / "config.json").read_text())


def test_the_seed_command_gets_the_models_bf16_spread_over_both_cards_with_a_cap_each(tmp_path):
    cfg, config = _seed(tmp_path)
    assert cfg.hardware.name == "rtx3090x2" and cfg.eval.baseline == baseline.AUTO
    b = baseline.resolve(cfg.eval.baseline, None, config, N_PARAMS_8B, cfg.hardware)
    cap = int(24 * GIB * 0.9)  # the profile's 24 GiB per card x its gpu_memory_utilization 0.9: 21.6 GiB of weights
    assert (b.preset, b.dtype) == ("bf16", "bfloat16")
    assert b.placement.device_map == "auto" and b.placement.max_memory == {0: cap, 1: cap}
    assert b.placement.first_device == "cuda:0"
    assert "cuda:0, cuda:1" in b.placement.text and "at most 21.6 GiB each" in b.placement.text
    assert b.why.startswith("auto on CUDA: the model's own dtype, bfloat16 (config.json dtype)")
    assert "bf16 weights 15.0 GiB (8.03 B params x 2 B) <= 43.2 GiB (2 card(s) x 21.6 GiB)" in b.why


def test_fp32_asked_on_the_seed_profile_fits_spread_over_the_two_cards(tmp_path):
    """29.9 GiB of fp32 weights exceed one card's 21.6 GiB but not the two cards' 43.2 GiB: asked for, it runs."""
    cfg, config = _seed(tmp_path, "eval.baseline=fp32")
    b = baseline.resolve("fp32", "float32", config, N_PARAMS_8B, cfg.hardware)
    assert (b.preset, b.dtype, b.placement.device_map) == ("fp32", "float32", "auto")
    assert "fp32 weights 29.9 GiB (8.03 B params x 4 B) <= 43.2 GiB" in b.why


def test_fp32_asked_on_one_24_gb_card_is_refused_naming_eval_baseline(tmp_path):
    folder = _model_dir(tmp_path)
    cfg = compose(["model=hf", f"model.id={folder}", "hardware=cuda", "eval.baseline=fp32"])
    with pytest.raises(UserError) as e:
        baseline.resolve("fp32", "float32", LLAMA_31_8B, N_PARAMS_8B, cfg.hardware)
    assert e.value.key == "eval.baseline" and "\n" not in str(e.value)
    assert "fp32 weights 29.9 GiB (8.03 B params x 4 B) > 20.4 GiB (1 card(s) x 20.4 GiB)" in str(e.value)
    assert "eval.baseline=auto (the model's own dtype, bfloat16, where it fits)" in str(e.value)


def test_auto_on_one_24_gb_card_is_bf16_there(tmp_path):
    folder = _model_dir(tmp_path)
    cfg = compose(["model=hf", f"model.id={folder}", "hardware=cuda"])
    b = baseline.resolve(cfg.eval.baseline, None, LLAMA_31_8B, N_PARAMS_8B, cfg.hardware)
    assert (b.preset, b.placement.max_memory) == ("bf16", {0: int(24 * GIB * 0.85)})


def test_an_fp32_model_keeps_fp32_where_it_fits_and_falls_back_to_bf16_where_not(tmp_path):
    fp32_config = {**LLAMA_31_8B, "torch_dtype": "float32"}
    two = compose([*SEED, "model.id=x"]).hardware
    one = compose(["hardware=cuda"]).hardware
    kept = baseline.resolve("auto", None, fp32_config, N_PARAMS_8B, two)
    assert (kept.preset, kept.dtype) == ("fp32", "float32")
    fallen = baseline.resolve("auto", None, fp32_config, N_PARAMS_8B, one)
    assert (fallen.preset, fallen.dtype) == ("bf16", "bfloat16")
    assert "fp32 weights 29.9 GiB (8.03 B params x 4 B) > 20.4 GiB" in fallen.why and "bfloat16 instead" in fallen.why
    # transformers 5 writes `dtype`, and a config with none loads float32
    assert baseline.resolve("auto", None, {"dtype": "float16"}, 10**9, one).preset == "fp16"
    assert baseline.resolve("auto", None, {}, 10**9, one).preset == "fp32"


def test_no_unquantized_baseline_fits_two_8_gb_cards(tmp_path):
    cfg, config = _seed(tmp_path, f"hardware.gpu_memory_bytes={8 * GIB}")
    with pytest.raises(UserError) as e:
        baseline.resolve(cfg.eval.baseline, None, config, N_PARAMS_8B, cfg.hardware)
    assert e.value.key == "eval.baseline"
    assert "bf16 weights 15.0 GiB (8.03 B params x 2 B) > 14.4 GiB (2 card(s) x 7.2 GiB)" in str(e.value)


def test_the_cpu_keeps_fp32_on_the_cpu(tmp_path):
    cfg = compose(["model=hf", f"model.id={_model_dir(tmp_path)}"])
    b = baseline.resolve(cfg.eval.baseline, None, LLAMA_31_8B, N_PARAMS_8B, cfg.hardware)
    assert (b.preset, b.dtype, b.placement.device_map, b.placement.max_memory) == ("fp32", "float32", "cpu", None)
    assert placement(cfg.hardware).device_map == "cpu"


def test_a_quantized_baseline_preset_is_placed_by_its_own_engine(tmp_path):
    cfg, config = _seed(tmp_path, "eval.baseline=gguf_f16")
    b = baseline.resolve("gguf_f16", None, config, N_PARAMS_8B, cfg.hardware, "llama_cpp")
    assert (b.preset, b.dtype, b.placement.max_memory) == ("gguf_f16", None, None)
    assert b.placement.text == "cuda, placed by the gguf_f16 preset's llama_cpp"
    on_vllm = baseline.resolve("fp16_vllm", "float16", config, N_PARAMS_8B, cfg.hardware, "vllm")
    assert on_vllm.placement.text == "cuda, placed by the fp16_vllm preset's vllm" and "<= 43.2 GiB" in on_vllm.why


def test_a_job_key_with_auto_names_the_unquantized_presets_libraries():
    assert baseline.preset_for_key("auto") == "fp32" and baseline.preset_for_key("bf16") == "bf16"


class _Keys:
    """A cache that records the key it is asked for and builds nothing."""

    def __init__(self):
        self.keys = []

    def get_or_build(self, kind, key, build, label):
        self.keys.append(key)
        raise LookupError("recorded")


def test_the_reference_cache_key_holds_the_resolved_dtype():
    cache = _Keys()
    eval_cfg = SimpleNamespace(ctx_len=512, stride=512, add_bos=None, kld_topk=64, baseline="auto")
    stream = SimpleNamespace(key="stream", add_bos=True)
    artifact = SimpleNamespace(manifest={"key": "artifact"})
    hardware = SimpleNamespace(device="cuda")
    for dtype in ("bfloat16", "float32", "bfloat16"):
        with pytest.raises(LookupError):
            reference_module.reference(
                SimpleNamespace(name="m"), eval_cfg, stream, hardware, cache, artifact, "torch", "bf16", dtype
            )
    assert cache.keys[0] != cache.keys[1] and cache.keys[0] == cache.keys[2]
