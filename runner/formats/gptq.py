"""GPTQ INT4 (weight-only, calibrated), with the implementation as a sweep axis (`format.backend`).

- gptqmodel (default): the GPTQ v1 checkpoint (qweight/qzeros/scales/g_idx + quantize_config.json)
  that vLLM, transformers and auto-gptq read.
- llmcompressor: compressed-tensors `pack-quantized` (vLLM-native).
Both quantize in fp32 on CPU; unquantized tensors are stored in fp16. Defaults: group 32, asymmetric (fair to a model whose weights carry
Q4_1 rounding, like the embedded SmolLM2); groups must divide every layer width (576 rules out 128).
"""
from dataclasses import dataclass
from pathlib import Path

from runner.data.calibration import load_calibration
from runner.errors import UserError
from runner.formats import weight_only as wo
from runner.formats.base import Format, FormatConfig

BACKENDS = {  # backend -> (modules it needs, pip extra, bits it can write)
    "gptqmodel": (("gptqmodel", "optimum"), "gptq", (2, 3, 4, 8)),  # optimum: transformers loads GPTQ with it
    "llmcompressor": (("llmcompressor", "compressed_tensors"), "llmcompressor", (4, 8)),
}


@dataclass
class GptqConfig(FormatConfig):
    family: str = "gptq"
    backend: str = "gptqmodel"  # gptqmodel | llmcompressor
    bits: int = 4
    group_size: int = 32  # -1: one group per row
    desc_act: bool = False  # act-order: quantize columns by decreasing Hessian diagonal
    damp_percent: float = 0.01
    sym: bool = False
    true_sequential: bool = True  # gptqmodel: quantize q/k/v, then o, then mlp within a layer


class GptqFormat(Format):
    FAMILY = "gptq"
    SCHEMA = GptqConfig
    USES_CALIBRATION = True

    def validate(self, cfg, model) -> None:
        wo.check_choice("format.backend", cfg.backend, BACKENDS)
        modules, extra, bits = BACKENDS[cfg.backend]
        wo.check_choice("format.bits", cfg.bits, bits, f" by backend {cfg.backend}")
        if not 0 < cfg.damp_percent < 1:
            raise UserError("format.damp_percent", f"{cfg.damp_percent} is outside (0, 1)", "use e.g. 0.01")
        wo.check_group_size(model, cfg.group_size, "format.group_size")
        wo.require(cfg.backend, modules, extra)

    def library_versions(self):
        return {**wo.versions("torch", "transformers", "gptqmodel", "llmcompressor", "compressed-tensors"), **wo.LAYOUT}

    def quantize(self, model, cfg, calibration, hardware, out_dir: Path, cache):
        calib = load_calibration(calibration, model, cache)
        wo.set_threads(hardware)
        if cfg.backend == "gptqmodel":
            from runner.formats.backends import gptqmodel_backend

            gptqmodel_backend.quantize_gptq(
                model.path, out_dir, calib.samples, bits=cfg.bits, group_size=cfg.group_size, sym=cfg.sym,
                desc_act=cfg.desc_act, damp_percent=cfg.damp_percent, true_sequential=cfg.true_sequential,
                device=hardware.device, threads=hardware.threads)
            layout = "GPTQ v1 (qweight/qzeros/scales/g_idx)"
        else:
            from runner.formats.backends import llmcompressor_backend

            llmcompressor_backend.quantize(
                model.path, out_dir, calib.samples, "gptq", device=hardware.device, bits=cfg.bits, sym=cfg.sym,
                group_size=None if cfg.group_size == -1 else cfg.group_size, damp_percent=cfg.damp_percent,
                desc_act=cfg.desc_act)
            layout = "compressed-tensors pack-quantized"
        wo.store_fp16(out_dir)
        return wo.finish(model, out_dir, backend=cfg.backend, checkpoint_format=layout, calibration=calib.manifest(),
                         **wo.CPU_FP32)
