"""The eval baseline a job compares against (eval.baseline), resolved for its model and hardware profile.

`eval.baseline: auto` (the default):
- on the CPU: fp32, as every CPU run before (the most exact reference; fp16/bf16 matmuls are slow on many CPUs);
- on CUDA: the model's own dtype, read from config.json (`dtype`, or transformers 4's `torch_dtype`): bf16 for
  Llama 3.1, what the model ships in and what the GPU formats are compared to when deployed. A model whose
  config says float32 (or says nothing: transformers then loads float32) keeps fp32 only where its weights fit:
  4 bytes x parameters within the profile's cards (n_gpus x the per-card cap of runner/system/placement.py);
  else bf16, half of it.
A named preset (eval.baseline=fp32, bf16, ...) is taken as asked; an unquantized one (format family torch_dtype)
whose weights cannot fit the profile's cards is refused before any work, naming eval.baseline.

An unquantized baseline on the torch engine (auto's always) is loaded with the profile's placement: spread over
`n_gpus` cards with a per-card cap; a preset on another engine is placed by that engine. What was resolved, where
it runs and why are params of the run (runner/metrics.py PARAM_*).
Pure functions of config.json, the parameter count and the profile: testable without a model or a GPU.
"""

from dataclasses import dataclass
from typing import Optional

from runner.config.model_config import BYTES_PER_PARAM, model_dtype
from runner.errors import UserError
from runner.system.placement import GIB, Placement, capacity_bytes, placement

AUTO = "auto"
# the unquantized presets (conf/format/<name>.yaml, family torch_dtype) auto chooses from, by torch dtype name
PRESET_OF_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclass(frozen=True)
class Baseline:
    preset: str  # the conf/format preset whose artifact is the reference
    dtype: Optional[str]  # its torch dtype (torch_dtype presets); None for another family (a GGUF's own types)
    placement: Placement
    why: str


def preset_for_key(requested: str) -> str:
    """A preset standing for eval.baseline in a job's key, before the model is known: auto's choices are all
    unquantized presets (family torch_dtype, torch engine), whose libraries are fp32's; which dtype it resolves to
    follows from the model's files and the profile, both in the key."""
    return "fp32" if requested == AUTO else requested


def weight_bytes(dtype: str, n_params: int) -> int:
    return BYTES_PER_PARAM[dtype] * n_params


def fits(dtype: str, n_params: int, hardware) -> bool:
    """Do the weights in `dtype` fit the profile's cards (n_gpus x per-card cap)? Always on the CPU."""
    capacity = capacity_bytes(hardware)
    return capacity is None or weight_bytes(dtype, n_params) <= capacity


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _against(dtype: str, n_params: int, hardware) -> str:
    """'fp32 weights 29.9 GiB <= 43.2 GiB (2 cards x 21.6 GiB)': the comparison fits() made, in words."""
    capacity = capacity_bytes(hardware)
    assert capacity is not None
    need = weight_bytes(dtype, n_params)
    sign = "<=" if need <= capacity else ">"
    return (
        f"{PRESET_OF_DTYPE[dtype]} weights {_gib(need)} ({n_params / 1e9:.2f} B params x {BYTES_PER_PARAM[dtype]} B) "
        f"{sign} {_gib(capacity)} ({hardware.n_gpus} card(s) x {_gib(capacity // hardware.n_gpus)})"
    )


def resolve(
    requested: str, preset_dtype: Optional[str], config: dict, n_params: int, hardware, engine: str = "torch"
) -> Baseline:
    """The baseline of a job: `requested` is eval.baseline ('auto' or a preset name), `preset_dtype` the dtype of
    that preset where it is an unquantized one (None for auto and for other families), `config` the model's
    config.json, `n_params` its parameter count, `hardware` the profile, `engine` the preset's format.engine (auto's
    presets run on torch)."""
    where = placement(hardware)
    on_gpus = capacity_bytes(hardware) is not None
    if requested != AUTO:
        if on_gpus and preset_dtype and not fits(preset_dtype, n_params, hardware):
            own = model_dtype(config)
            raise UserError(
                "eval.baseline",
                f"{_against(preset_dtype, n_params, hardware)}: the {requested} baseline does not fit "
                f"hardware={hardware.name}",
                f"use eval.baseline=auto (the model's own dtype{f', {own}' if own else ''}, where it fits), "
                "or a profile with more GPU memory",
            )
        why = f"set by eval.baseline={requested}"
        if on_gpus and preset_dtype:
            why += f"; {_against(preset_dtype, n_params, hardware)}"
        if not preset_dtype or engine != "torch":  # a GGUF on llama.cpp, fp16 on vLLM: its engine places it
            where = Placement(hardware.device, None, f"{hardware.device}, placed by the {requested} preset's {engine}")
        return Baseline(requested, preset_dtype, where, why)
    if not hardware.device.startswith("cuda"):
        return Baseline("fp32", "float32", where, "auto on the CPU: fp32, the most exact reference")
    own = model_dtype(config)
    dtype = own or "float32"  # no dtype in config.json: transformers loads float32
    why = f"auto on CUDA: the model's own dtype, {dtype} (config.json {'dtype' if own else 'names none'})"
    if not on_gpus:  # a profile without GPU count or size: nothing to check the weights against
        return Baseline(PRESET_OF_DTYPE[dtype], dtype, where, why)
    if dtype == "float32" and not fits(dtype, n_params, hardware):
        why += f", but {_against(dtype, n_params, hardware)}: bfloat16 instead"
        dtype = "bfloat16"
    if not fits(dtype, n_params, hardware):
        raise UserError(
            "eval.baseline",
            f"{_against(dtype, n_params, hardware)}: no unquantized baseline fits hardware={hardware.name}",
            "use a profile whose GPUs hold the model in its own dtype, or hardware=cpu for the evaluation",
        )
    return Baseline(PRESET_OF_DTYPE[dtype], dtype, where, f"{why}; {_against(dtype, n_params, hardware)}")
