"""Checks shared by the GPU-only formats and engines (EXL2/ExLlamaV2, vLLM), run before any work; and which GPUs
this machine has (machine_gpus), for checking a hardware profile against it (runner/config/machine.py).

They never import the GPU libraries: exllamav2 raises `OSError: CUDA_HOME ...` at import on a
machine without CUDA, and vllm pulls its own CUDA build of torch. torch.cuda answers first, then
runner.system.packages finds the package without importing it.
"""

import os
from dataclasses import dataclass
from typing import Any, List

from runner.errors import UserError
from runner.system import packages

INSTALL_HINT = "see docs/formats.md, 'GPU formats and engines'"


def require_cuda(key: str, what: str, package: str, extra: str, hardware=None) -> None:
    """Raise a one-line UserError unless CUDA, the package and (if given) a CUDA hardware profile are there."""
    import torch

    if not torch.cuda.is_available():
        raise UserError(
            key,
            f"{what} needs a CUDA GPU and torch sees none on this machine",
            f"run it on a machine with an NVIDIA GPU ({INSTALL_HINT}), or pick a CPU format (fp16, gguf_*)",
        )
    packages.require([package], key, what, f"pip install -e '.[{extra}]' on this CUDA machine ({INSTALL_HINT})")
    if hardware is not None:
        require_gpu_profile(hardware, what)


def require_gpu_profile(hardware, what: str) -> None:
    """The hardware profile must be a CUDA one whose GPUs this machine has."""
    import torch

    if not str(hardware.device).startswith("cuda"):
        raise UserError(
            "hardware",
            f"{what} runs on the GPU but hardware={hardware.name} is a CPU profile",
            "pick a CUDA profile: hardware=cuda, hardware=h100 or hardware=rtx3090x2",
        )
    have = torch.cuda.device_count()
    need = max(hardware.n_gpus, hardware.tensor_parallel_size)
    if need > have:
        raise UserError(
            "hardware.tensor_parallel_size",
            f"hardware={hardware.name} asks for {need} GPUs, this machine has {have}",
            f"pick a profile for {have} GPU(s), e.g. hardware=cuda",
        )


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_bytes: int


def machine_gpus(nvml: Any = None) -> List[Gpu]:
    """The GPUs this process may use (CUDA_VISIBLE_DEVICES where it lists indices), from NVML: no torch import, so a
    sweep's launch stays light. Without pynvml torch.cuda answers; without a driver (a CPU machine) there are none."""
    if nvml is None:
        try:
            import pynvml as nvml  # type: ignore[no-redef]
        except ImportError:
            return _torch_gpus()
    try:
        nvml.nvmlInit()
        count = nvml.nvmlDeviceGetCount()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA driver, so no GPU
        return []
    out = []
    for i in visible_gpu_indices(count):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        name = nvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else str(name)  # older pynvml returns bytes
        out.append(Gpu(i, name, int(nvml.nvmlDeviceGetMemoryInfo(handle).total)))
    return out


def _torch_gpus() -> List[Gpu]:
    import torch

    if not torch.cuda.is_available():
        return []
    props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    return [Gpu(i, p.name, int(p.total_memory)) for i, p in enumerate(props)]


def visible_gpu_indices(count: int) -> List[int]:
    """The NVML indices CUDA_VISIBLE_DEVICES leaves this process: every one where it is unset or names UUIDs."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return list(range(count))
    try:
        return [i for i in (int(v) for v in value.split(",") if v.strip()) if 0 <= i < count]
    except ValueError:  # GPU-<uuid> / MIG-<uuid>: not indices
        return list(range(count))
