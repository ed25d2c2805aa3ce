"""AWQ INT4 (activation-aware scaling + weight-only INT4), with the implementation as a sweep axis.

- llmcompressor (default on CPU): AWQ smoothing + W4A16 in fp32, compressed-tensors `pack-quantized`;
  ~10 min for SmolLM2-135M on 2 cores.
- gptqmodel: AutoAWQ GEMM/GEMV layout; its only CPU kernel (AWQ_TORCH) needs fp16, which this
  class of CPU runs 5-13x slower: ~2 h for SmolLM2-135M on 2 cores. Fine on a GPU.
- autoawq (optional extra, archived upstream): quantizes on CPU in fp16; its own kernels cannot run
  the result on CPU, transformers (+ gptqmodel) loads it.
Defaults: group 32 with zero point (asymmetric), fair to Q4_1-rounded weights.
"""
from dataclasses import dataclass
from pathlib import Path

from runner.data.calibration import load_calibration
from runner.errors import UserError
from runner.formats import weight_only as wo
from runner.formats.base import Format, FormatConfig

BACKENDS = {  # backend -> (modules it needs, pip extra, bits it can write)
    "llmcompressor": (("llmcompressor", "compressed_tensors"), "llmcompressor", (4, 8)),
    "gptqmodel": (("gptqmodel",), "awq", (4,)),
    "autoawq": (("awq", "gptqmodel"), "autoawq", (4,)),  # gptqmodel: to load its output
}
VERSIONS = ("GEMM", "GEMV")


@dataclass
class AwqConfig(FormatConfig):
    family: str = "awq"
    backend: str = "llmcompressor"  # llmcompressor | gptqmodel | autoawq
    w_bit: int = 4
    q_group_size: int = 32
    zero_point: bool = True  # asymmetric
    version: str = "GEMM"  # AutoAWQ kernel layout (gptqmodel, autoawq); llmcompressor writes compressed-tensors


class AwqFormat(Format):
    FAMILY = "awq"
    SCHEMA = AwqConfig
    USES_CALIBRATION = True

    def validate(self, cfg, model) -> None:
        wo.check_choice("format.backend", cfg.backend, BACKENDS)
        modules, extra, bits = BACKENDS[cfg.backend]
        wo.check_choice("format.w_bit", cfg.w_bit, bits, f" by backend {cfg.backend}")
        wo.check_choice("format.version", cfg.version, VERSIONS)
        if cfg.backend == "llmcompressor" and cfg.version != "GEMM":
            raise UserError("format.version", f"{cfg.version} is an AutoAWQ kernel layout; llmcompressor writes compressed-tensors",
                               "use format.backend=gptqmodel or autoawq for GEMV, or leave format.version=GEMM")
        wo.check_group_size(model, cfg.q_group_size, "format.q_group_size", allow_per_channel=False)
        wo.require(cfg.backend, modules, extra)

    def library_versions(self):
        return {**wo.versions("torch", "transformers", "gptqmodel", "llmcompressor", "compressed-tensors", "autoawq"), **wo.LAYOUT}

    def quantize(self, model, cfg, calibration, hardware, out_dir: Path, cache):
        calib = load_calibration(calibration, model, cache)
        wo.set_threads(hardware)
        settings = dict(bits=cfg.w_bit, group_size=cfg.q_group_size)
        if cfg.backend == "llmcompressor":
            from runner.formats.backends import llmcompressor_backend

            llmcompressor_backend.quantize(model.path, out_dir, calib.samples, "awq", device=hardware.device,
                                           sym=not cfg.zero_point, **settings)
            layout, dtype = "compressed-tensors pack-quantized", "float32"
        elif cfg.backend == "gptqmodel":
            from runner.formats.backends import gptqmodel_backend

            gptqmodel_backend.quantize_awq(model.path, out_dir, calib.samples, zero_point=cfg.zero_point, version=cfg.version,
                                           device=hardware.device, threads=hardware.threads, **settings)
            layout, dtype = f"AutoAWQ {cfg.version}", "float16"
        else:
            from runner.formats.backends import autoawq_backend

            autoawq_backend.quantize(model.path, out_dir, calib.samples, zero_point=cfg.zero_point, version=cfg.version,
                                     device=hardware.device, **settings)
            layout, dtype = f"AutoAWQ {cfg.version}", "float16"
        wo.store_fp16(out_dir)
        return wo.finish(model, out_dir, backend=cfg.backend, checkpoint_format=layout, quantize_dtype=dtype,
                         calibration=calib.manifest(), **wo.CPU_FP32)
