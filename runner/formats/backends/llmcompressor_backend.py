"""llm-compressor (vLLM project): GPTQ, AWQ and W8A16 written as compressed-tensors `pack-quantized`.

The model is loaded on the CPU, in the dtype the caller picks (runner/formats/weight_only.py quantize_dtype: fp32
on a CPU, the model's own on a GPU), and `oneshot` does the rest: its calibrated modifiers (GPTQ, AWQ) run in
its sequential pipeline, which moves one decoder layer at a time to the accelerator (sequential onloading; the
calibration activations wait on the CPU between layers), so a GPU needs room for one layer, not the model:
an 8B model quantizes on one 24 GB card. Without an accelerator the same pipeline runs on the CPU.

CPU pitfalls handled here:
- fp16/bf16 matmuls are 5-13x slower on AVX2-only CPUs: the caller picks fp32 there.
- its AWQ pins cached activations for faster host-to-GPU copies; with no accelerator that fails
  ("Cannot access accelerator device when none is available"): IntermediatesCache.pin_memory is
  made a no-op for the duration of the call when CUDA is absent (pinning only serves GPU copies).
"""

import contextlib
from pathlib import Path
from typing import List, Optional

import torch


def _scheme(bits: int, sym: bool, group_size: Optional[int]):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    strategy = "group" if group_size else "channel"
    args = QuantizationArgs(num_bits=bits, type="int", symmetric=sym, strategy=strategy, group_size=group_size or None)
    return {"group_0": QuantizationScheme(targets=["Linear"], weights=args)}


@contextlib.contextmanager
def _no_pinning_without_accelerator():
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.cuda.is_available():
        yield
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


def recipe(
    method: str,
    *,
    bits: int,
    sym: bool,
    group_size: Optional[int],
    damp_percent: float = 0.01,
    desc_act: bool = False,
    n_grid: int = 20,
    duo_scaling: bool = True,
):
    """The modifiers for method gptq | awq | rtn (plain min-max, e.g. W8A16). lm_head stays unquantized.

    AWQ's n_grid / duo_scaling shape its per-layer scale search (n_grid forwards of each mapping's parent module).
    """
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform.awq import AWQModifier

    groups = _scheme(bits, sym, group_size)
    if method == "gptq":
        return [
            GPTQModifier(
                config_groups=groups,
                ignore=["lm_head"],
                dampening_frac=damp_percent,
                actorder="static" if desc_act else None,
            )
        ]
    quant = QuantizationModifier(config_groups=groups, ignore=["lm_head"])
    return [AWQModifier(n_grid=n_grid, duo_scaling=duo_scaling), quant] if method == "awq" else [quant]


def quantize(src: Path, out: Path, samples: Optional[List[List[int]]], method: str, *, dtype: str, **settings) -> None:
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM

    # on the CPU whatever the hardware: oneshot onloads each layer to the accelerator in turn (see above)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, dtype), device_map=None)
    kwargs = {}
    if samples:
        from datasets import Dataset

        kwargs = dict(
            dataset=Dataset.from_dict({"input_ids": samples, "attention_mask": [[1] * len(s) for s in samples]}),
            num_calibration_samples=len(samples),
            max_seq_length=len(samples[0]),
            shuffle_calibration_samples=False,
        )
    with _no_pinning_without_accelerator():
        oneshot(model=model, recipe=recipe(method, **settings), **kwargs)
    model.save_pretrained(out, save_compressed=True)
