"""The hardware profile checked against the machine it runs on: GPU count, name and memory per card.

Without it a profile would be trusted by its name (a 2xH100 box would pass as `rtx3090x2`), and the per-card memory
the fit check and the servers size themselves by (gpu_memory_bytes) would be the profile's word, not the card's.
A CUDA profile needs at least n_gpus visible cards with at least gpu_memory_bytes each (within MEMORY_TOLERANCE:
NVML reports an 80 GB H100 as 79.6 GiB, a 24 GB card as exactly 24 GiB); a profile that names its card (gpu_name,
a part of the name NVML reports) also needs that name and that size, not a larger card. The generic `cuda` profile names
none, so any card at least its size passes it. A CPU profile runs anywhere. A mismatch is one line on the key
`hardware` naming what the machine has and the profile that fits it, or how to write one.
"""

from typing import List, Optional

from omegaconf import OmegaConf

from runner.errors import UserError
from runner.paths import CONF_DIR, options
from runner.system.gpu import Gpu, machine_gpus

GIB = 1024**3
MEMORY_TOLERANCE = 0.08  # a card's reported memory vs the profile's gpu_memory_bytes


def check_machine(hardware, gpus: Optional[List[Gpu]] = None) -> None:
    """UserError on `hardware` unless this machine has what the CUDA profile `hardware` describes."""
    if not str(hardware.device).startswith("cuda"):
        return
    gpus = machine_gpus() if gpus is None else gpus
    problem = mismatch(hardware, gpus)
    if problem is None:
        return
    fits = sorted(
        (name for name in options("hardware") if name != hardware.name and _profile_fits(name, gpus)),
        key=lambda name: _specificity(name),
    )
    fix = (
        f"use hardware={fits[0]}" + (f" (or {', '.join(fits[1:])})" if len(fits) > 1 else "")
        if fits
        else (
            f"write conf/hardware/<name>.yaml with device: cuda, n_gpus: {len(gpus)}, gpu_name: "
            f"'{_model_name(gpus[0].name)}', gpu_memory_bytes: {gpus[0].memory_bytes} and use hardware=<name> "
            "(docs/deployment.md#hardware-profiles)"
            if gpus
            else "use hardware=cpu, or run on a machine with the profile's GPUs"
        )
    )
    raise UserError("hardware", f"hardware={hardware.name} {problem}, this machine has {describe(gpus)}", fix)


def mismatch(hardware, gpus: List[Gpu]) -> Optional[str]:
    """What the CUDA profile expects that these GPUs are not; None when they fit it."""
    name, size = getattr(hardware, "gpu_name", None), getattr(hardware, "gpu_memory_bytes", None)
    count = hardware.n_gpus
    want = f"expects {max(count, 1)} x {name or 'GPU'}" + (f" ({size / GIB:.1f} GiB each)" if size else "")
    if len(gpus) < max(count, 1):
        return want
    for gpu in gpus[: max(count, 1)]:
        if name and name.lower() not in gpu.name.lower():
            return want
        if size and gpu.memory_bytes < (1 - MEMORY_TOLERANCE) * size:
            return want  # too small for what the profile sizes its models by
        if size and name and gpu.memory_bytes > (1 + MEMORY_TOLERANCE) * size:
            return want  # a named card of another size: another model of card
    return None


def describe(gpus: List[Gpu]) -> str:
    if not gpus:
        return "no GPU (NVML and torch see none)"
    kinds: dict = {}
    for g in gpus:
        kinds.setdefault((g.name, round(g.memory_bytes / GIB, 1)), []).append(g.index)
    return " + ".join(f"{len(ix)} x {name} ({gib} GiB each)" for (name, gib), ix in kinds.items())


def _profile(name: str):
    return OmegaConf.load(CONF_DIR / "hardware" / f"{name}.yaml")  # read, not composed: no resolver runs


def _specificity(name: str) -> tuple:
    """Sort key, best first: a profile naming the card, then the one using the most cards."""
    profile = _profile(name)
    return (profile.get("gpu_name") is None, -int(profile.get("n_gpus", 1)), name)


def _profile_fits(name: str, gpus: List[Gpu]) -> bool:
    profile = _profile(name)
    if not str(profile.get("device", "cpu")).startswith("cuda"):
        return False
    node = OmegaConf.create({k: profile.get(k) for k in ("name", "gpu_name", "gpu_memory_bytes")})
    node.n_gpus = profile.get("n_gpus", 1)
    return mismatch(node, gpus) is None


def _model_name(name: str) -> str:
    """'NVIDIA GeForce RTX 3090' -> 'RTX 3090': the part a profile's gpu_name matches on."""
    for prefix in ("NVIDIA GeForce ", "NVIDIA "):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name
