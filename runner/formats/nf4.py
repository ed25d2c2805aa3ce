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

    def weight_bits(self, cfg, base_config=None, tensor_parallel=1):
        # bitsandbytes: blocks of 64 weights share an fp32 absmax (+0.5 bits); double quantization stores those as
        # int8 with an fp32 constant per 256 blocks (+0.127 bits)
        extra = 8 / 64 + 32 / (64 * 256) if cfg.double_quant else 32 / 64
        return self._stored(cfg, 4 + extra, f"{cfg.quant_type}: 4-bit, blocks of 64 (+{extra:.3f} bits)")

    def check(self, cfg, model) -> None:
        wo.check_choice("format.quant_type", cfg.quant_type, ["nf4", "fp4"])
