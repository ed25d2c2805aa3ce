"""Unquantized baselines: the model saved as safetensors in fp32, fp16 or bf16 (torch engine)."""
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from runner.errors import UserError
from runner.formats.base import Format, FormatConfig

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class TorchDtypeConfig(FormatConfig):
    family: str = "torch_dtype"
    dtype: str = "float32"


class TorchDtypeFormat(Format):
    FAMILY = "torch_dtype"
    SCHEMA = TorchDtypeConfig

    def validate(self, cfg, model) -> None:
        if cfg.dtype not in DTYPES:
            raise UserError("format.dtype", f"unknown dtype '{cfg.dtype}'", f"use one of {sorted(DTYPES)}")

    def library_versions(self):
        return {"torch": torch.__version__, "transformers": transformers.__version__}

    def quantize(self, model, cfg, calibration, hardware, out_dir: Path, cache):
        hf_model = model.load_hf(dtype=DTYPES[cfg.dtype])
        hf_model.save_pretrained(out_dir, safe_serialization=True)
        model.copy_tokenizer(out_dir)
        del hf_model
        return {
            "weight_files": sorted(p.name for p in out_dir.glob("*.safetensors")),
            "torch_dtype": cfg.dtype,
        }
