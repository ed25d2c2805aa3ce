"""torchao schemes with real CPU kernels, quantized at load time through transformers' TorchAoConfig.

- w8a8_dynamic: Int8DynamicActivationInt8WeightConfig: int8 weights per output row, activations
  quantized per token at run time, matmuls in int8 (torchao's int_scaled_matmul -> torch._int_mm).
- int4_weight_only is refused (SCHEME_REFUSED): torchao 0.18's only CPU int4 layout cannot be saved.
The artifact is torchao's safetensors layout (flattened tensor subclasses + metadata), which plain
`from_pretrained` reloads. Embeddings, norms and lm_head stay fp32, as in the int8 (torchao) family.
The kernel that runs it depends on the CPU that runs it: the engine reads it where it loads (param engine.kernel,
runner/engines/torch_engine.py); the manifest keeps only what the quantizing machine would have run.
"""

import json
from pathlib import Path
from typing import Dict

from runner.engines.torch_engine import torchao_int8_kernel
from runner.errors import UserError
from runner.formats import weight_only as wo
from runner.formats.backend_table import Backend, WeightOnlyFormat
from runner.formats.base import tensor_type_table

SCHEMES = ("w8a8_dynamic",)
# Measured on torch 2.13.0 CPU + torchao 0.18.0 + transformers 5.17.0 (why there is no preset).
SCHEME_REFUSED = {
    "int4_weight_only": (
        "torchao 0.18 runs int4 on CPU only as Int4OpaqueTensor (PrototypeInt4WeightOnlyConfig, kernel "
        "aten._weight_int4pack_mm_for_cpu), which save_pretrained refuses ('Unsupported tensor type: "
        "Int4OpaqueTensor': "
        "not in torchao's safetensors allow-list); its saveable int4 layouts have no CPU kernel (plain needs mslk, "
        "tile_packed_to_4d CUDA, plain_int32 XPU/NPU)",
        "for 4-bit on CPU use format=gguf_q4_0 (llama.cpp) or format=gptq_int4; here use format.scheme=w8a8_dynamic",
    ),
}


def tensor_types(out_dir: Path) -> Dict[str, Dict]:
    """What torchao's safetensors hold per base parameter: its tensor subclass (flattened into
    `<module>._weight_<part>` tensors, named in the file's metadata) or a plain dtype."""
    from safetensors import safe_open

    elements: Dict[str, int] = {}
    nbytes: Dict[str, int] = {}
    counts: Dict[str, int] = {}
    for f in sorted(out_dir.glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            meta, keys = st.metadata() or {}, set(st.keys())
            for name in json.loads(meta.get("tensor_names", "[]")):
                info = json.loads(meta[name])
                if (
                    info["_type"] == "Tensor" and name not in keys
                ):  # a tied weight (lm_head = embed_tokens): stored once
                    continue
                if info["_type"] == "Tensor":
                    t = st.get_tensor(name)
                    kind, n, b = str(t.dtype).replace("torch.", ""), t.numel(), t.numel() * t.element_size()
                else:
                    module, attr = name.rsplit(".", 1)
                    parts = [
                        st.get_tensor(f"{module}._{attr}_{p}")
                        for p in info["_tensor_data_names"]
                        if f"{module}._{attr}_{p}" in keys
                    ]
                    kind, n = info["_type"], st.get_tensor(f"{module}._{attr}_qdata").numel()
                    b = sum(p.numel() * p.element_size() for p in parts)
                elements[kind] = elements.get(kind, 0) + n
                nbytes[kind] = nbytes.get(kind, 0) + b
                counts[kind] = counts.get(kind, 0) + 1
    return tensor_type_table(counts, elements, nbytes)


def _w8a8_dynamic(model, cfg, samples, hardware, out_dir):
    import torch
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig
    from transformers import AutoModelForCausalLM, TorchAoConfig

    qmodel = AutoModelForCausalLM.from_pretrained(
        model.path,
        dtype=torch.float32,
        device_map=hardware.device,
        quantization_config=TorchAoConfig(quant_type=Int8DynamicActivationInt8WeightConfig()),
    )
    qmodel.save_pretrained(out_dir, safe_serialization=True)
    return {
        "checkpoint_format": "torchao Int8Tensor (W8A8 dynamic, per-row symmetric)",
        # where it was quantized, not where it runs (that is the job's engine.kernel param)
        "kernel_on_quantizing_machine": torchao_int8_kernel(hardware.device),
        "tensor_types": tensor_types(out_dir),
    }


class TorchaoFormat(WeightOnlyFormat):
    BACKENDS = {"torchao": Backend(("torchao",), "int8", _w8a8_dynamic, store_fp16=False)}
    LIBRARIES = ("torch", "transformers", "torchao")

    def weight_bits(self, cfg, base_config=None, tensor_parallel=1):
        return self._stored(cfg, 8.0, f"{cfg.scheme}: int8 weights per output row")

    def check(self, cfg, model) -> None:
        if cfg.scheme in SCHEME_REFUSED:
            problem, fix = SCHEME_REFUSED[cfg.scheme]
            raise UserError(
                "format.scheme", f"'{cfg.scheme}' cannot run from a saved artifact on this stack: {problem}", fix
            )
        wo.check_choice("format.scheme", cfg.scheme, SCHEMES)
