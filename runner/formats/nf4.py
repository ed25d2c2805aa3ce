"""bitsandbytes 4-bit (NF4 or FP4) quantized at load time: no calibration, blocks of 64.

The seed's load-time row (on CUDA there); it runs on CPU too. Saved with save_pretrained
(serialized 4-bit weights + quant state) and reloaded by plain from_pretrained.
"""
from dataclasses import dataclass
from pathlib import Path

from runner.formats import weight_only as wo
from runner.formats.base import Format, FormatConfig


@dataclass
class Nf4Config(FormatConfig):
    family: str = "nf4"
    backend: str = "bitsandbytes"
    quant_type: str = "nf4"  # nf4 | fp4
    double_quant: bool = False  # also quantize the per-block scales (saves ~0.4 bpw)


class Nf4Format(Format):
    FAMILY = "nf4"
    SCHEMA = Nf4Config

    def validate(self, cfg, model) -> None:
        wo.check_choice("format.backend", cfg.backend, ["bitsandbytes"])
        wo.check_choice("format.quant_type", cfg.quant_type, ["nf4", "fp4"])
        wo.require(cfg.backend, ("bitsandbytes",), "int8")

    def library_versions(self):
        return {**wo.versions("torch", "transformers", "bitsandbytes"), **wo.LAYOUT}

    def quantize(self, model, cfg, calibration, hardware, out_dir: Path, cache):
        from runner.formats.backends import transformers_backend

        wo.set_threads(hardware)
        transformers_backend.quantize(model.path, out_dir, "bnb_4bit", device=hardware.device,
                                      quant_type=cfg.quant_type, double_quant=cfg.double_quant)
        return wo.finish(model, out_dir, backend=cfg.backend, checkpoint_format=f"bitsandbytes {cfg.quant_type}",
                         **wo.CPU_FP32)
