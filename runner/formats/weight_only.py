"""Shared by the weight-only formats (gptq, awq, int8, nf4): backend extras, checks against the model, saving."""
import importlib.metadata
import importlib.util
import logging
import os
from pathlib import Path
from typing import Dict, Iterable, List

from safetensors import safe_open

from runner.errors import UserError

log = logging.getLogger(__name__)
INSTALL = "pip install -c requirements/constraints.txt"


def require(backend: str, modules: Iterable[str], extra: str, key: str = "format.backend") -> None:
    """UserError naming the pip extra when a backend's library is not installed (checked without importing it)."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise UserError(key, f"backend '{backend}' needs the Python package '{module}', which is not installed",
                            f"{INSTALL} -e '.[{extra}]' (the `{extra}` extra), or choose another {key}")


def check_choice(key: str, value, choices: Iterable, why: str = "") -> None:
    choices = list(choices)
    if value not in choices:
        raise UserError(key, f"'{value}' is not supported{why}", f"use one of {choices}")


def versions(*dists: str) -> Dict[str, str]:
    out = {}
    for d in dists:
        try:
            out[d] = importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            out[d] = "not installed"
    return out


def linear_widths(model_dir: Path) -> Dict[str, int]:
    """Input width of every 2-D weight that weight-only quantization touches (not embeddings, not lm_head)."""
    widths = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            for name in st.keys():
                shape = st.get_slice(name).get_shape()
                if len(shape) == 2 and name.endswith(".weight") and "embed" not in name and "lm_head" not in name:
                    widths[name[: -len(".weight")]] = shape[1]
    return widths


def check_group_size(model, group_size: int, key: str, allow_per_channel: bool = True) -> None:
    """Groups run along each layer's input: the size must divide every input width (SmolLM2: 576 = 4.5 x 128)."""
    if group_size == -1 and allow_per_channel:
        return
    if group_size <= 0:
        raise UserError(key, f"{group_size} is not a group size",
                        "use a positive size such as 32, 64 or 128" + (", or -1 for one group per row" if allow_per_channel else ""))
    if model is None:
        return
    widths = linear_widths(model.path)
    bad = {n: w for n, w in widths.items() if w % group_size}
    if bad:
        name, width = next(iter(bad.items()))
        fits = [g for g in (256, 128, 64, 32, 16) if all(w % g == 0 for w in widths.values())][:2]
        raise UserError(key, f"{group_size} does not divide the input width {width} of {name} "
                             f"({len(bad)} of {len(widths)} layers; widths {sorted(set(widths.values()))})",
                        f"use {key}={' or '.join(map(str, fits)) or '-1'} (divides every layer width)")


def finish(model, out_dir: Path, **extras) -> Dict:
    """Give the artifact the base model's tokenizer and readable files; list the weight files."""
    model.copy_tokenizer(out_dir)
    for p in out_dir.iterdir():
        if p.is_file():
            os.chmod(p, 0o644)  # some libraries write 0600; cache entries may be shared
    weight_files: List[str] = sorted(p.name for p in out_dir.glob("*.safetensors"))
    if not weight_files:
        raise RuntimeError(f"the backend wrote no .safetensors file into {out_dir}")
    return {"weight_files": weight_files, **extras}


def set_threads(hardware) -> None:
    import torch

    torch.set_num_threads(hardware.threads)
