"""How models are put on the GPUs, checked on a CPU with the libraries' entry points stubbed: the torch engine asks
accelerate for the profile's cards with a per-card cap and refuses what spills off them; llm-compressor gets the
model on the CPU in the model's dtype (its sequential pipeline onloads layer by layer); gptqmodel quantizes GPTQ in
the model's dtype on a GPU, in fp32 on the CPU."""

import json
from types import SimpleNamespace

import pytest
import torch

from helpers import compose
from runner.errors import UserError
from runner.formats import gptq
from runner.system.placement import GIB

SEED = ["experiment=seed_table", "deployment=rtx3090x2_50users", "model=hf", "model.id=x"]
LLAMA = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4}


class _Loaded(torch.nn.Module):
    """What from_pretrained hands back, with the device map accelerate chose."""

    def __init__(self, device_map):
        super().__init__()
        self.hf_device_map = device_map
        self.dtype = torch.bfloat16

    def forward(self, input_ids, logits_to_keep=0):
        raise AssertionError("not run here")


def _load(monkeypatch, hardware, device_map):
    from transformers import AutoModelForCausalLM

    from runner.engines.torch_engine import TorchEngine

    asked = {}

    def from_pretrained(path, **kwargs):
        asked.update(kwargs)
        return _Loaded(device_map)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    artifact = SimpleNamespace(path="a", manifest={"weight_files": ["model.safetensors"], "format": "bf16"})
    model = SimpleNamespace(allow_pickle=False, trust_remote_code=False)
    return TorchEngine().load(artifact, model, hardware), asked


def test_the_torch_engine_spreads_a_model_over_the_profiles_cards(monkeypatch):
    hardware = compose(SEED).hardware
    loaded, asked = _load(monkeypatch, hardware, {"model.embed_tokens": 0, "model.layers": 1, "lm_head": 1})
    cap = int(24 * GIB * 0.9)
    assert asked["device_map"] == "auto" and asked["max_memory"] == {0: cap, 1: cap}
    assert loaded.device == "cuda:0"  # input ids go where the embedding is


def test_weights_that_spill_off_the_cards_are_a_hardware_error(monkeypatch):
    hardware = compose(SEED).hardware
    with pytest.raises(UserError) as e:
        _load(monkeypatch, hardware, {"model.embed_tokens": 0, "model.layers": 1, "lm_head": "disk"})
    assert e.value.key == "hardware" and "accelerate put part of it on ['disk']" in str(e.value)


def test_the_cpu_profile_loads_on_the_cpu_as_before(monkeypatch):
    _, asked = _load(monkeypatch, compose([]).hardware, {})
    assert asked["device_map"] == "cpu" and "max_memory" not in asked


def test_llm_compressor_gets_the_model_on_the_cpu_in_the_dtype_asked(monkeypatch):
    from transformers import AutoModelForCausalLM

    from runner.formats.backends import llmcompressor_backend

    asked = {}

    def from_pretrained(path, **kwargs):
        asked.update(kwargs)
        raise LookupError("stop before oneshot")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    with pytest.raises(LookupError):
        llmcompressor_backend.quantize("m", "o", None, "rtn", dtype="bfloat16", bits=8, sym=True, group_size=None)
    assert asked == {"dtype": torch.bfloat16, "device_map": None}


@pytest.mark.parametrize("profile, dtype", [(SEED, "bfloat16"), ([], "float32")])
def test_gptqmodel_runs_gptq_in_the_models_dtype_on_gpus_and_fp32_on_the_cpu(profile, dtype, monkeypatch, tmp_path):
    from runner.formats.backends import gptqmodel_backend

    (tmp_path / "config.json").write_text(json.dumps({**LLAMA, "dtype": "bfloat16"}))
    asked = {}
    monkeypatch.setattr(gptqmodel_backend, "quantize_gptq", lambda *a, **kw: asked.update(kw))
    cfg = compose([*profile, "format=gptq_int4", "format.group_size=128"])
    facts = gptq._gptqmodel(SimpleNamespace(path=tmp_path), cfg.format, [[1, 2]], cfg.hardware, tmp_path / "out")
    assert asked["dtype"] == dtype and facts["quantize_dtype"] == dtype
