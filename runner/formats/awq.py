"""AWQ INT4 (activation-aware scaling + weight-only INT4), with the implementation as a sweep axis.

- llmcompressor (default on CPU): AWQ smoothing + W4A16 in fp32, compressed-tensors `pack-quantized`;
  ~10 min for SmolLM2-135M on 2 cores.
- gptqmodel: AutoAWQ GEMM/GEMV layout; its only CPU kernel (AWQ_TORCH) needs fp16, which this
  class of CPU runs 5-13x slower: ~2 h for SmolLM2-135M on 2 cores. Fine on a GPU.
- autoawq (optional extra, archived upstream): quantizes on CPU in fp16; its own kernels cannot run
  the result on CPU, transformers (+ gptqmodel) loads it.
Defaults: group 32 with zero point (asymmetric), fair to Q4_1-rounded weights.
"""

from runner.errors import UserError
from runner.formats import weight_only as wo
from runner.formats.backend_table import Backend, WeightOnlyFormat
from runner.formats.backends import IntGrid

VERSIONS = ("GEMM", "GEMV")
# gptqmodel and autoawq search a fixed 20-point grid: format.n_grid / duo_scaling act on llmcompressor only
FIXED_SEARCH = {"n_grid": 20, "fixed_by_backend": True}


def _llmcompressor(model, cfg, samples, hardware, out_dir):
    from runner.formats.backends import llmcompressor_backend

    llmcompressor_backend.quantize(
        model.path,
        out_dir,
        samples,
        "awq",
        device=hardware.device,
        sym=not cfg.zero_point,
        bits=cfg.w_bit,
        group_size=cfg.q_group_size,
        n_grid=cfg.n_grid,
        duo_scaling=cfg.duo_scaling,
    )
    return {
        "checkpoint_format": "compressed-tensors pack-quantized",
        "quantize_dtype": "float32",
        "awq_scale_search": {"n_grid": cfg.n_grid, "duo_scaling": cfg.duo_scaling},
    }


def _autoawq_layout(quantize, model, cfg, samples, hardware, out_dir, **extra):
    """gptqmodel and AutoAWQ both write AutoAWQ's GEMM/GEMV layout, searching a fixed grid of scales."""
    grid = IntGrid(cfg.w_bit, cfg.q_group_size, sym=not cfg.zero_point)
    quantize(model.path, out_dir, samples, grid, version=cfg.version, device=hardware.device, **extra)
    return {
        "checkpoint_format": f"AutoAWQ {cfg.version}",
        "quantize_dtype": "float16",
        "awq_scale_search": FIXED_SEARCH,
    }


def _gptqmodel(model, cfg, samples, hardware, out_dir):
    from runner.formats.backends import gptqmodel_backend

    return _autoawq_layout(
        gptqmodel_backend.quantize_awq, model, cfg, samples, hardware, out_dir, threads=hardware.threads
    )


def _autoawq(model, cfg, samples, hardware, out_dir):
    from runner.formats.backends import autoawq_backend

    return _autoawq_layout(autoawq_backend.quantize, model, cfg, samples, hardware, out_dir)


class AwqFormat(WeightOnlyFormat):
    USES_CALIBRATION = True
    BITS = "w_bit"
    GROUP = "q_group_size"
    BACKENDS = {
        "llmcompressor": Backend(("llmcompressor", "compressed_tensors"), "llmcompressor", _llmcompressor, bits=(4, 8)),
        "gptqmodel": Backend(("gptqmodel",), "awq", _gptqmodel, bits=(4,)),
        "autoawq": Backend(("awq", "gptqmodel"), "autoawq", _autoawq, bits=(4,)),  # gptqmodel: to load its output
    }
    LIBRARIES = ("torch", "transformers", "gptqmodel", "llmcompressor", "compressed-tensors", "autoawq")

    def check(self, cfg, model) -> None:
        wo.check_choice("format.version", cfg.version, VERSIONS)
        if cfg.backend == "llmcompressor" and cfg.version != "GEMM":
            raise UserError(
                "format.version",
                f"{cfg.version} is an AutoAWQ kernel layout; llmcompressor writes compressed-tensors",
                "use format.backend=gptqmodel or autoawq for GEMV, or leave format.version=GEMM",
            )
        wo.check_group_size(model, cfg.q_group_size, "format.q_group_size", allow_per_channel=False)
        least = 3 if cfg.duo_scaling else 2  # duo scaling spends one point on the identity (no scaling)
        if cfg.n_grid < least:
            raise UserError(
                "format.n_grid",
                f"{cfg.n_grid} grid points leave no scale to search",
                f"use format.n_grid >= {least} (llm-compressor's default: 20)",
            )
