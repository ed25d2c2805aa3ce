"""Quantization at load time through transformers' quantization_config: torchao and bitsandbytes.

The quantized model is saved with save_pretrained (safetensors) and reloads with plain
from_pretrained. fp32 is the compute dtype on CPU (fp16/bf16 matmuls are 5-13x slower on AVX2).
"""

from pathlib import Path

import torch


def quantization_config(backend: str, **settings):
    from transformers import BitsAndBytesConfig, TorchAoConfig

    if backend == "torchao":
        from torchao.quantization import Int8WeightOnlyConfig

        return TorchAoConfig(quant_type=Int8WeightOnlyConfig(group_size=settings.get("group_size") or None))
    if backend == "bnb_int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=settings["threshold"])
    if backend == "bnb_4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=settings["quant_type"],
            bnb_4bit_use_double_quant=settings["double_quant"],
            bnb_4bit_compute_dtype=torch.float32,
        )
    raise ValueError(backend)


def quantize(src: Path, out: Path, backend: str, *, device: str, **settings) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        src, dtype=torch.float32, device_map=device, quantization_config=quantization_config(backend, **settings)
    )
    model.save_pretrained(out, safe_serialization=True)
