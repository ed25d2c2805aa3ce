"""Shared by the weight-only formats (gptq, awq, int8, nf4): checks against the model, saving.

Their backend tables and shared validate are in runner/formats/backend_table.py."""

import json
import logging
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from safetensors import safe_open

from runner.config import model_config
from runner.errors import UserError

log = logging.getLogger(__name__)
# manifest hint for the torch engine: compute in fp32 on CPU (fp16 matmuls are 5-13x slower on AVX2)
CPU_FP32 = {"cpu_compute_dtype": "float32"}
LAYOUT = {"runner.weight_only": "2"}  # bump when what the runner writes around the library's output changes (cache key)


def check_choice(key: str, value, choices: Iterable, why: str = "") -> None:
    choices = list(choices)
    if value not in choices:
        raise UserError(key, f"'{value}' is not supported{why}", f"use one of {choices}")


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


def check_group_size(model, group_size: Optional[int], key: str, allow_per_channel: bool = True) -> None:
    """Groups run along each layer's input: the size must divide every input width (SmolLM2: 576 = 4.5 x 128).
    None: resolved from the model (runner/formats/group_size.py), which picks a size that does."""
    if group_size is None or (group_size == -1 and allow_per_channel):
        return
    if group_size <= 0:
        raise UserError(
            key,
            f"{group_size} is not a group size",
            "use a positive size such as 32, 64 or 128"
            + (", or -1 for one group per row" if allow_per_channel else ""),
        )
    if model is None:
        return
    widths = linear_widths(model.path)
    bad = {n: w for n, w in widths.items() if w % group_size}
    if bad:
        name, width = next(iter(bad.items()))
        fits = [g for g in (256, 128, 64, 32, 16) if all(w % g == 0 for w in widths.values())][:2]
        raise UserError(
            key,
            f"{group_size} does not divide the input width {width} of {name} "
            f"({len(bad)} of {len(widths)} layers; widths {sorted(set(widths.values()))})",
            f"use {key}={' or '.join(map(str, fits)) or '-1'} (divides every layer width)",
        )


def quantize_dtype(model, hardware) -> str:
    """The dtype a calibrated backend runs the model in: fp32 on the CPU (fp16/bf16 matmuls are 5-13x slower on
    AVX2-only CPUs); on a GPU the model's own (config.json: bf16 for Llama 3.1), half of fp32's memory and the dtype
    the artifact is served in. The libraries keep their statistics (GPTQ's Hessian) in fp32 either way."""
    if not str(hardware.device).startswith("cuda"):
        return "float32"
    return model_config.model_dtype(model_config.read(model.path)) or "float32"


def stored_dtype(quantized_in: str) -> str:
    """What the unquantized tensors are saved in: fp16 after a fp32 run, as shipped checkpoints are; else the
    16-bit dtype the backend ran in."""
    return "float16" if quantized_in == "float32" else quantized_in


def store_unquantized(out_dir: Path, dtype: str) -> None:
    """Store the unquantized tensors (embeddings, norms, lm_head, scales) left in fp32 in `dtype` (stored_dtype),
    and say so in config.json.

    Backends quantize in fp32 on CPU for speed and would save those in fp32; 16 bits is what GPU
    kernels (vLLM) expect and what the size columns should count. The torch engine still computes
    in fp32 on CPU (manifest `cpu_compute_dtype`).
    """
    import torch
    from safetensors.torch import load_file, save_file

    target = getattr(torch, dtype)
    for f in sorted(out_dir.glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            metadata = st.metadata()
        tensors = {k: (v.to(target) if v.dtype == torch.float32 else v) for k, v in load_file(f).items()}
        save_file(tensors, f, metadata=metadata)
    config = json.loads((out_dir / "config.json").read_text())
    config["dtype"] = dtype
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))


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
