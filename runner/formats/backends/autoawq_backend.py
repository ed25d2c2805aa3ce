"""AutoAWQ (optional extra `autoawq`; archived upstream, kept because users know it).

It quantizes on CPU in fp16 and saves the AutoAWQ GEMM/GEMV layout; its own kernels cannot run the
result on CPU (they need IPEX, which has no build for torch 2.13), but transformers loads it
through gptqmodel's AWQ kernels, so the torch engine evaluates it like any other artifact.
"""

from pathlib import Path
from typing import List

import torch

from runner.formats.backends import IntGrid


def quantize(src: Path, out: Path, samples: List[List[int]], grid: IntGrid, *, version: str, device: str) -> None:
    from awq import AutoAWQForCausalLM
    from transformers import AutoTokenizer

    model = AutoAWQForCausalLM.from_pretrained(str(src), torch_dtype=torch.float16, device_map=device)
    quant_config = {"w_bit": grid.bits, "q_group_size": grid.group_size, "zero_point": not grid.sym, "version": version}
    model.quantize(
        AutoTokenizer.from_pretrained(src),
        quant_config=quant_config,
        calib_data=samples,
        max_calib_samples=len(samples),
        max_calib_seq_len=len(samples[0]),
    )
    model.save_quantized(str(out))
