"""INT8 weight-only (per output channel, no calibration), with the implementation as a sweep axis.

- torchao (default): Int8WeightOnlyConfig through transformers' TorchAoConfig; the fastest CPU forward.
- bitsandbytes: LLM.int8() at load time (the classic INT8 row; works on CPU, ~3x slower forward than fp32).
- llmcompressor: W8A16 (symmetric per channel), compressed-tensors `pack-quantized`, vLLM-native.
torchao and bitsandbytes quantize the fp32 model as it loads and save what they hold: embeddings,
norms and lm_head stay fp32 (on SmolLM2 its tied 28M-parameter embedding is half of the bytes).
"""

from runner.formats import weight_only as wo
from runner.formats.backend_table import Backend, WeightOnlyFormat


def _at_load(kind: str, layout: str):
    """torchao / bitsandbytes: transformers quantizes the model as it loads it."""

    def quantize(model, cfg, samples, hardware, out_dir):
        from runner.formats.backends import transformers_backend

        transformers_backend.quantize(
            model.path, out_dir, kind, device=hardware.device, threshold=cfg.llm_int8_threshold
        )
        return {"checkpoint_format": layout}

    return quantize


def _llmcompressor(model, cfg, samples, hardware, out_dir):
    from runner.formats.backends import llmcompressor_backend

    dtype = wo.quantize_dtype(model, hardware)
    llmcompressor_backend.quantize(model.path, out_dir, None, "rtn", dtype=dtype, bits=8, sym=True, group_size=None)
    return {"checkpoint_format": "compressed-tensors pack-quantized (W8A16)", "quantize_dtype": dtype}


class Int8Format(WeightOnlyFormat):
    BACKENDS = {
        "torchao": Backend(("torchao",), "int8", _at_load("torchao", "torchao Int8WeightOnly"), store_fp16=False),
        "bitsandbytes": Backend(
            ("bitsandbytes",), "int8", _at_load("bnb_int8", "bitsandbytes LLM.int8"), store_fp16=False
        ),
        "llmcompressor": Backend(("llmcompressor", "compressed_tensors"), "llmcompressor", _llmcompressor),
    }
    LIBRARIES = ("torch", "transformers", "torchao", "bitsandbytes", "llmcompressor", "compressed-tensors")

    def weight_bits(self, cfg, base_config=None, tensor_parallel=1):
        # one scale per output row: 16 / row length, < 0.01 bits at LLM widths
        return self._stored(cfg, 8.0, "int8 per output row")
