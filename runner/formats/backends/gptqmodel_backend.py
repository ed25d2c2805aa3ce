"""gptqmodel (ModelCloud): GPTQ (GPTQ v1 checkpoint: qweight/qzeros/scales/g_idx) and AWQ (AutoAWQ GEMM/GEMV).

CPU pitfalls handled here:
- its worker pool asks for 2 CPU workers, but its default on a 2-core box is 1 ("Virtual pool
  'model_loader:cpu' requests 2 workers but parent 'cpu' only has 1"): GPTQMODEL_CPU_WORKERS is set
  before the first import.
- GPTQ runs in the dtype the caller picks (runner/formats/weight_only.py quantize_dtype): fp32 on a CPU, where
  fp16/bf16 matmuls are 5-13x slower on AVX2-only CPUs; the model's own (bf16 for Llama 3.1) on a GPU. gptqmodel
  loads the model on the CPU and moves one layer at a time to the GPU to quantize it.
- AWQ: the default kernel needs CUDA ("AWQ: CUDA is not available") -> BACKEND.AWQ_TORCH, which only
  takes fp16/bf16 ("AwqTorchLinear only supports [float16, bfloat16]"): the model is loaded in fp16.
- offload_to_disk is off: it would write a temp folder's path into the saved config.
- its save print()s the folder listing and the whole config.json: moved to the job log (runner/system/library_logs.py).
- every quantize starts by writing and fsync-ing a 100 MB temp file to rate the disk for offload_to_disk,
  which is off here: the probe is skipped (`_no_disk_probe`); what it writes into the checkpoint is unchanged.
"""

import os
from pathlib import Path
from typing import List

import torch

from runner.formats.backends import IntGrid
from runner.system.library_logs import stdout_to_job_log


def _gptqmodel(threads: int):
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, threads)))
    import gptqmodel

    _no_disk_probe()
    return gptqmodel


def _no_disk_probe() -> None:
    """gptqmodel rates the disk (100 MB written + fsync) once per process only to warn about offload_to_disk."""
    from gptqmodel.looper import module_looper

    module_looper.io_write_performance = lambda: None  # the looper then skips its disk warning


def _calibration(samples: List[List[int]]):
    return [
        {"input_ids": torch.tensor([s]), "attention_mask": torch.ones(1, len(s), dtype=torch.long)} for s in samples
    ]


def _config(g, grid: IntGrid, **method):
    """gptqmodel's QuantizeConfig on the grid, with the method's own settings; offload_to_disk off."""
    return g.QuantizeConfig(bits=grid.bits, group_size=grid.group_size, sym=grid.sym, offload_to_disk=False, **method)


def _quantize(g, src: Path, out: Path, samples: List[List[int]], qc, dtype, device: str, **run) -> None:
    """Load src in `dtype` with the QuantizeConfig, quantize on the samples one at a time, save into out."""
    model = g.GPTQModel.load(str(src), qc, dtype=dtype, device=device)
    model.quantize(_calibration(samples), batch_size=1, **run)
    with stdout_to_job_log("gptqmodel"):
        model.save(str(out))


def quantize_gptq(
    src: Path,
    out: Path,
    samples: List[List[int]],
    grid: IntGrid,
    *,
    desc_act: bool,
    damp_percent: float,
    true_sequential: bool,
    dtype: str,
    device: str,
    threads: int,
) -> None:
    g = _gptqmodel(threads)
    qc = _config(g, grid, desc_act=desc_act, damp_percent=damp_percent, true_sequential=true_sequential)
    _quantize(g, src, out, samples, qc, getattr(torch, dtype), device)


def quantize_awq(
    src: Path, out: Path, samples: List[List[int]], grid: IntGrid, *, version: str, device: str, threads: int
) -> None:
    g = _gptqmodel(threads)
    from gptqmodel.quantization import FORMAT, METHOD

    qc = _config(g, grid, method=METHOD.AWQ, format=FORMAT[version])
    kernel = g.BACKEND.AWQ_TORCH if device == "cpu" else g.BACKEND.AUTO
    _quantize(g, src, out, samples, qc, torch.float16, device, backend=kernel)
