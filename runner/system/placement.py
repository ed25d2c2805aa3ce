"""Where the torch engine puts a model's weights: the CPU, or the hardware profile's GPUs with a cap per card.

On a profile with `device: cuda`, `n_gpus` and `gpu_memory_bytes`, weights are spread over GPUs 0..n_gpus-1 by
accelerate (`device_map="auto"`: balanced over the cards) within `max_memory`, the per-card cap: the card's memory
times the profile's `gpu_memory_utilization`. The rest of each card is the headroom for the CUDA context, the
activations and the log-probs of an eval window (ctx_len x vocab floats: 0.26 GB at 512 x 128256). With no CPU or
disk in `max_memory`, weights that do not fit fail to load instead of running from host memory unnoticed.
Pure functions of the profile: testable without a GPU.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Union

GIB = 1024**3


@dataclass(frozen=True)
class Placement:
    device_map: str  # from_pretrained's device_map: "cpu", a device such as "cuda:1", or "auto" (accelerate)
    max_memory: Optional[Dict[Union[int, str], int]]  # accelerate's per-device cap in bytes; None: one device
    text: str  # in words, for params and errors

    @property
    def first_device(self) -> str:
        """Where input ids go: the device of the embedding (GPU 0 when accelerate spreads the model)."""
        return "cuda:0" if self.device_map == "auto" else self.device_map


def per_card_bytes(hardware) -> Optional[int]:
    """The most a model's weights may take on one GPU of the profile; None without a per-card memory."""
    if not getattr(hardware, "gpu_memory_bytes", None):
        return None
    return int(hardware.gpu_memory_bytes * utilization(hardware))


def utilization(hardware) -> float:
    return getattr(hardware, "gpu_memory_utilization", None) or 0.85


def spreads(hardware) -> bool:
    """Does the profile ask for the GPUs by count and size (device `cuda` with n_gpus and gpu_memory_bytes set)?"""
    return (
        hardware.device == "cuda"
        and (getattr(hardware, "n_gpus", 0) or 0) >= 1
        and per_card_bytes(hardware) is not None
    )


def placement(hardware) -> Placement:
    """The profile's placement for a torch model: `hardware.device` as it is, or the GPUs with a per-card cap."""
    if not spreads(hardware):
        return Placement(hardware.device, None, hardware.device)
    cap = per_card_bytes(hardware)
    assert cap is not None
    cards = list(range(hardware.n_gpus))
    text = (
        f"{', '.join(f'cuda:{i}' for i in cards)} (accelerate device_map=auto), at most {cap / GIB:.1f} GiB each "
        f"({utilization(hardware):g} of {hardware.gpu_memory_bytes / GIB:.1f} GiB)"
    )
    return Placement("auto", {i: cap for i in cards}, text)


def capacity_bytes(hardware) -> Optional[int]:
    """What the profile's GPUs hold in weights in all (per-card cap x n_gpus); None off the GPUs."""
    cap = per_card_bytes(hardware)
    return cap * hardware.n_gpus if cap is not None and spreads(hardware) else None
