"""auto-round (Intel): SignRound (signed-gradient tuning of each weight's rounding and of the clipping range,
block by block against the block's fp32 output), exported as a GPTQ v1 checkpoint (`auto_gptq`:
qweight/qzeros/scales/g_idx, quant_method "gptq") that transformers loads through gptqmodel and vLLM reads.

CPU handling:
- fp32 tuning (`amp=False`); `torch.compile` off: on 2 cores its compile time exceeds what it saves.
- auto-round 0.15.1 opens a float32 `autocast` on CPU when amp is off (an inverted condition in its
  SignRound quantizer); torch warns "In CPU autocast, but the target dtype is not supported. Disabling
  autocast." at every step and runs it as a no-op, so that one warning is silenced here.
- its export writes into `<output_dir>/<model name>-w<bits>g<group>/`: the files are moved up into out.
"""

import shutil
import warnings
from pathlib import Path
from typing import List, Optional

import torch

from runner.formats.backends import IntGrid


def quantize(
    src: Path,
    out: Path,
    samples: List[List[int]],
    grid: IntGrid,
    *,
    iters: int,
    batch_size: int,
    lr: Optional[float],
    device: str,
) -> None:
    from auto_round import AutoRound, SignRoundConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src)
    dataset = [{"input_ids": torch.tensor([s])} for s in samples]
    staging = out / ".auto_round"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="In CPU autocast, but the target dtype is not supported")
        signround = SignRoundConfig(bits=grid.bits, group_size=grid.group_size, sym=grid.sym, iters=iters, lr=lr)
        ar = AutoRound(
            model,
            tokenizer,
            alg_configs=signround,
            dataset=dataset,
            nsamples=len(samples),
            seqlen=len(samples[0]),
            batch_size=batch_size,
            device_map=device,
            amp=False,
            enable_torch_compile=False,
            seed=0,
        )
        _, folder = ar.quantize_and_save(str(staging), format="auto_gptq")
    folder = Path(folder)
    for f in folder.iterdir():
        shutil.move(str(f), out / f.name)
    shutil.rmtree(staging)
