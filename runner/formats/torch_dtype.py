"""Unquantized baselines: the model saved as safetensors in fp32, fp16 or bf16 (torch engine)."""

from pathlib import Path

from runner.errors import UserError
from runner.formats.base import Format, WeightBits
from runner.system import packages

DTYPES = ("bfloat16", "float16", "float32")  # names of torch dtypes; torch is imported only to quantize
DTYPE_BITS = {"bfloat16": 16, "float16": 16, "float32": 32}


class TorchDtypeFormat(Format):
    def weight_bits(self, cfg, base_config=None, tensor_parallel=1):
        bits = DTYPE_BITS.get(cfg.dtype)
        return None if bits is None else WeightBits(bits, bits, what=f"{cfg.dtype}: {bits} bits every weight")

    def validate(self, cfg, model) -> None:
        if cfg.dtype not in DTYPES:
            raise UserError("format.dtype", f"unknown dtype '{cfg.dtype}'", f"use one of {sorted(DTYPES)}")

    def library_versions(self):
        return packages.versions("torch", "transformers")

    def quantize(self, model, cfg, calibration, hardware, out_dir: Path, cache):
        import torch

        hf_model = model.load_hf(dtype=getattr(torch, cfg.dtype))
        hf_model.save_pretrained(out_dir, safe_serialization=True)
        model.copy_tokenizer(out_dir)
        del hf_model
        return {
            "weight_files": sorted(p.name for p in out_dir.glob("*.safetensors")),
            "torch_dtype": cfg.dtype,
        }
