"""bitsandbytes 4-bit (NF4 or FP4) quantized at load time: no calibration, blocks of 64.

The classic load-time NF4 row (usually on CUDA); it runs on CPU too. Saved with save_pretrained
(serialized 4-bit weights + quant state) and reloaded by plain from_pretrained.
"""

from runner.formats import weight_only as wo
from runner.formats.backend_table import Backend, WeightOnlyFormat


def _bitsandbytes(model, cfg, samples, hardware, out_dir):
    from runner.formats.backends import transformers_backend

    transformers_backend.quantize(
        model.path,
        out_dir,
        "bnb_4bit",
        device=hardware.device,
        quant_type=cfg.quant_type,
        double_quant=cfg.double_quant,
    )
    return {"checkpoint_format": f"bitsandbytes {cfg.quant_type}"}


class Nf4Format(WeightOnlyFormat):
    BACKENDS = {"bitsandbytes": Backend(("bitsandbytes",), "int8", _bitsandbytes, store_fp16=False)}
    LIBRARIES = ("torch", "transformers", "bitsandbytes")

    def check(self, cfg, model) -> None:
        wo.check_choice("format.quant_type", cfg.quant_type, ["nf4", "fp4"])
