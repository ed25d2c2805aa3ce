"""Importance matrix for llama.cpp quantization, from the calibration text.

For every linear layer, llama.cpp's imatrix holds the mean of the squared input activations per
input column (what `llama-imatrix` computes). We collect it with forward hooks on the fp32 HF
model, name each entry by its GGUF tensor name, cache it per (model, calibration), and hand it to
llama_model_quantize as the C array `llama_model_imatrix_data[]` (NULL-terminated).
"""

import ctypes
import json
import logging
from pathlib import Path
from typing import Any, Dict

import numpy as np
from tqdm import tqdm

from runner.cache import Cache
from runner.data.calibration import calibration_identity, load_calibration
from runner.errors import UserError

log = logging.getLogger(__name__)


def imatrix_for(model, base_gguf: Path, calibration, hardware, cache: Cache) -> Dict[str, Any]:
    key = Cache.key("imatrix", model.identity, calibration_identity(calibration, cache))

    def build(folder):
        values, meta = _collect(model, base_gguf, calibration, hardware, cache)
        np.savez(folder / "imatrix.npz", **values)
        (folder / "meta.json").write_text(json.dumps(meta))

    hit = cache.get_or_build("imatrix", key, build)
    values = dict(np.load(hit / "imatrix.npz"))
    meta = json.loads((hit / "meta.json").read_text())
    return {"data": _c_array(values), "n_tensors": len(values), **meta}


def _collect(model, base_gguf: Path, calibration, hardware, cache: Cache):
    import torch

    calib = load_calibration(calibration, model, cache)
    samples = calib.samples
    names = _gguf_names(model, base_gguf)
    torch.set_num_threads(hardware.threads)
    hf = model.load_hf(torch.float32)
    sums: Dict[str, torch.Tensor] = {}
    counts: Dict[str, int] = {}
    hooks = []
    for module_name, module in hf.named_modules():
        if isinstance(module, torch.nn.Linear) and module_name in names:

            def hook(mod, inputs, output, name=names[module_name]):
                x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])
                sums[name] = sums.get(name, 0) + (x * x).sum(dim=0)
                counts[name] = counts.get(name, 0) + x.shape[0]

            hooks.append(module.register_forward_hook(hook))
    if not hooks:
        raise UserError(
            "format.imatrix", "no linear layer of this model maps to a GGUF tensor name", "set format.imatrix=false"
        )
    with torch.inference_mode():
        for sample in tqdm(samples, desc="imatrix", unit="sample"):
            hf(input_ids=torch.tensor([sample]), use_cache=False)
    for h in hooks:
        h.remove()
    values = {name: (sums[name] / counts[name]).numpy().astype(np.float32) for name in sums}
    meta = {
        "calibration": calib.manifest(),
        "calibration_tokens": len(samples) * len(samples[0]),
        "method": "mean x^2 per input column (torch hooks, fp32)",
    }
    return values, meta


def _gguf_names(model, base_gguf: Path) -> Dict[str, str]:
    """HF module name -> GGUF tensor name, for the tensors present in the converted file."""
    import gguf
    from transformers import AutoConfig

    from runner.formats.gguf.files import read_header

    header = read_header(base_gguf)
    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}.get(header.metadata.get("general.architecture"))
    present = {t.name for t in header.tensors}
    n_blocks = AutoConfig.from_pretrained(model.path).num_hidden_layers
    tmap = gguf.get_tensor_name_map(arch, n_blocks)
    out = {}
    from safetensors import safe_open

    for f in sorted(Path(model.path).glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            for key in st.keys():
                if not key.endswith(".weight"):
                    continue
                module = key[: -len(".weight")]
                mapped = tmap.get_name(module)
                if mapped and f"{mapped}.weight" in present:
                    out[module] = f"{mapped}.weight"
    return out


def _c_array(values: Dict[str, np.ndarray]):
    """NULL-terminated llama_model_imatrix_data[]; the array keeps its buffers alive."""
    import llama_cpp

    entries = sorted(values.items())
    arr = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
    keep = []
    for i, (name, vec) in enumerate(entries):
        buf = np.ascontiguousarray(vec, dtype=np.float32)
        name_b = name.encode()
        keep += [buf, name_b]
        arr[i].name = name_b
        arr[i].data = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        arr[i].size = buf.size
    arr[len(entries)].name = None
    arr._keepalive = keep
    return arr
