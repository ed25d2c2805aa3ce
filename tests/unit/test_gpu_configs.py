"""GPU presets and hardware profiles compose, validate, and say what they claim (no GPU needed)."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from helpers import ROOT
from runner.config.schema import register_configs
from runner.engines import ENGINES
from runner.formats import get_format, load_format_preset

CONF = ROOT / "conf"
register_configs()
EXL2_PRESETS = {
    "exl2_2_5bpw": 2.5,
    "exl2_3_0bpw": 3.0,
    "exl2_4_0bpw": 4.0,
    "exl2_5_0bpw": 5.0,
    "exl2_6_0bpw": 6.0,
    "exl2_8_0bpw": 8.0,
}
GIB = 1024**3


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("name,bpw", sorted(EXL2_PRESETS.items()))
def test_exl2_presets(name, bpw):
    cfg = _compose([f"format={name}"])
    assert (cfg.format.name, cfg.format.family, cfg.format.engine) == (name, "exl2", "exllamav2")
    assert cfg.format.bpw == bpw and cfg.format.head_bits in (6, 8)
    assert get_format("exl2").uses_calibration(cfg.format)


def test_exl2_bpw_override_and_type_check():
    cfg = _compose(["format=exl2", "format.bpw=4.5", "hardware=cuda"])
    assert cfg.format.bpw == 4.5 and cfg.format.name == "exl2" and cfg.hardware.device == "cuda"
    with pytest.raises(ConfigCompositionException, match="bpw"):
        _compose(["format=exl2", "format.bpw=four"])
    with pytest.raises(ConfigCompositionException, match="group_size"):
        _compose(["format=exl2", "format.group_size=32"])


def test_every_preset_names_a_registered_engine():
    for path in sorted((CONF / "format").glob("*.yaml")):
        assert load_format_preset(path.stem, "format").engine in ENGINES, path.name


def test_vllm_preset_and_engine_override():
    assert _compose(["format=fp16_vllm"]).format.engine == "vllm"
    assert _compose(["format=fp16", "format.engine=vllm"]).format.engine == "vllm"


@pytest.mark.parametrize("name,n_gpus,tp,gpu_gib", [("cuda", 1, 1, 24), ("h100", 1, 1, 80), ("rtx3090x2", 2, 2, 24)])
def test_gpu_hardware_profiles(name, n_gpus, tp, gpu_gib):
    hw = _compose([f"hardware={name}"]).hardware
    assert hw.name == name and hw.device == "cuda" and hw.n_gpu_layers == -1
    assert (hw.n_gpus, hw.tensor_parallel_size, hw.gpu_memory_bytes) == (n_gpus, tp, gpu_gib * GIB)
    assert 0 < hw.memory_budget_bytes <= hw.n_gpus * hw.gpu_memory_bytes  # the budget fits the cards
    assert 0 < hw.gpu_memory_utilization <= 1


def test_rtx3090x2_is_48_gb_over_two_gpus():
    hw = _compose(["hardware=rtx3090x2"]).hardware
    assert hw.n_gpus * hw.gpu_memory_bytes == 48 * GIB and hw.tensor_parallel_size == 2


def test_cpu_profile_unchanged():
    hw = _compose(["hardware=cpu"]).hardware
    assert (hw.device, hw.n_gpus, hw.tensor_parallel_size, hw.gpu_memory_bytes) == ("cpu", 0, 1, None)
