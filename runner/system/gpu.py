"""Checks shared by the GPU-only formats and engines (EXL2/ExLlamaV2, vLLM), run before any work.

They never import the GPU libraries: exllamav2 raises `OSError: CUDA_HOME ...` at import on a
machine without CUDA, and vllm pulls its own CUDA build of torch. torch.cuda answers first, then
runner.system.packages finds the package without importing it.
"""

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
