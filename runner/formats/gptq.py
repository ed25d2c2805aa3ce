"""GPTQ INT4 (weight-only, calibrated), with the implementation as a sweep axis (`format.backend`).

- gptqmodel (default): the GPTQ v1 checkpoint (qweight/qzeros/scales/g_idx + quantize_config.json)
  that vLLM, transformers and auto-gptq read.
- llmcompressor: compressed-tensors `pack-quantized` (vLLM-native).
Both quantize in fp32 on CPU; unquantized tensors are stored in fp16. Defaults: group 32, asymmetric (fair to a model
whose weights carry
Q4_1 rounding, like the embedded SmolLM2); groups must divide every layer width (576 rules out 128).
"""

from runner.errors import UserError
from runner.formats import weight_only as wo
from runner.formats.backend_table import Backend, WeightOnlyFormat
from runner.formats.backends import IntGrid


def _gptqmodel(model, cfg, samples, hardware, out_dir):
    from runner.formats.backends import gptqmodel_backend

    gptqmodel_backend.quantize_gptq(
        model.path,
        out_dir,
        samples,
        IntGrid.of(cfg),
        desc_act=cfg.desc_act,
        damp_percent=cfg.damp_percent,
        true_sequential=cfg.true_sequential,
        device=hardware.device,
        threads=hardware.threads,
    )
    return {"checkpoint_format": "GPTQ v1 (qweight/qzeros/scales/g_idx)"}


def _llmcompressor(model, cfg, samples, hardware, out_dir):
    from runner.formats.backends import llmcompressor_backend

    llmcompressor_backend.quantize(
        model.path,
        out_dir,
        samples,
        "gptq",
        device=hardware.device,
        bits=cfg.bits,
        sym=cfg.sym,
        group_size=None if cfg.group_size == -1 else cfg.group_size,
        damp_percent=cfg.damp_percent,
        desc_act=cfg.desc_act,
    )
    return {"checkpoint_format": "compressed-tensors pack-quantized"}


class GptqFormat(WeightOnlyFormat):
    USES_CALIBRATION = True
    BITS = "bits"
    GROUP = "group_size"
    BACKENDS = {
        # optimum: transformers loads GPTQ checkpoints with it
        "gptqmodel": Backend(("gptqmodel", "optimum"), "gptq", _gptqmodel, bits=(2, 3, 4, 8)),
        "llmcompressor": Backend(("llmcompressor", "compressed_tensors"), "llmcompressor", _llmcompressor, bits=(4, 8)),
    }
    LIBRARIES = ("torch", "transformers", "gptqmodel", "llmcompressor", "compressed-tensors")

    def check(self, cfg, model) -> None:
        if not 0 < cfg.damp_percent < 1:
            raise UserError("format.damp_percent", f"{cfg.damp_percent} is outside (0, 1)", "use e.g. 0.01")
        wo.check_group_size(model, cfg.group_size, "format.group_size")
