"""INT8 weight-only (per output channel, no calibration), with the implementation as a sweep axis.

- torchao (default): Int8WeightOnlyConfig through transformers' TorchAoConfig; the fastest CPU forward.
- bitsandbytes: LLM.int8() at load time (the seed's row; works on CPU, ~3x slower forward than fp32).
- llmcompressor: W8A16 (symmetric per channel), compressed-tensors `pack-quantized`, vLLM-native.
torchao and bitsandbytes quantize the fp32 model as it loads and save what they hold: embeddings,
norms and lm_head stay fp32 (on SmolLM2 its tied 28M-parameter embedding is half of the bytes).
"""
from dataclasses import dataclass
from pathlib import Path

from runner.formats import weight_only as wo
from runner.formats.base import Format, FormatConfig

BACKENDS = {  # backend -> (modules it needs, pip extra)
    "torchao": (("torchao",), "int8"),
    "bitsandbytes": (("bitsandbytes",), "int8"),
    "llmcompressor": (("llmcompressor", "compressed_tensors"), "llmcompressor"),
}


@dataclass
class Int8Config(FormatConfig):
    family: str = "int8"
    backend: str = "torchao"  # torchao | bitsandbytes | llmcompressor
    llm_int8_threshold: float = 6.0  # bitsandbytes: outlier threshold (activations above stay in fp)


class Int8Format(Format):
    FAMILY = "int8"
    SCHEMA = Int8Config

    def validate(self, cfg, model) -> None:
        wo.check_choice("format.backend", cfg.backend, BACKENDS)
        wo.require(cfg.backend, *BACKENDS[cfg.backend])

    def library_versions(self):
        return {**wo.versions("torch", "transformers", "torchao", "bitsandbytes", "llmcompressor", "compressed-tensors"), **wo.LAYOUT}

    def quantize(self, model, cfg, calibration, hardware, out_dir: Path, cache):
        wo.set_threads(hardware)
        if cfg.backend == "llmcompressor":
            from runner.formats.backends import llmcompressor_backend

            llmcompressor_backend.quantize(model.path, out_dir, None, "rtn", device=hardware.device,
                                           bits=8, sym=True, group_size=None)
            wo.store_fp16(out_dir)
            layout = "compressed-tensors pack-quantized (W8A16)"
        else:
            from runner.formats.backends import transformers_backend

            kind = "torchao" if cfg.backend == "torchao" else "bnb_int8"
            transformers_backend.quantize(model.path, out_dir, kind, device=hardware.device, threshold=cfg.llm_int8_threshold)
            layout = "torchao Int8WeightOnly" if kind == "torchao" else "bitsandbytes LLM.int8"
        return wo.finish(model, out_dir, backend=cfg.backend, checkpoint_format=layout, **wo.CPU_FP32)
