"""AutoRound INT4 (weight-only, calibrated): auto-round's SignRound tunes each weight's rounding and the
clipping range block by block on the calibration samples, then exports a GPTQ v1 checkpoint
(qweight/qzeros/scales/g_idx): the torch engine runs it on gptqmodel's kernels, like gptq_int4, and vLLM reads it.

Cost grows with `iters x batch_size x calibration.seq_len` per decoder block (a forward and a backward of
the block each step); AutoRound's own default (200 steps of 8 samples) is sized for a GPU: the
`autoround_int4_cpu` preset takes fewer steps of fewer samples (docs/formats.md, "AutoRound").
"""

import json
from pathlib import Path
from typing import Dict

from safetensors import safe_open

from runner.errors import UserError
from runner.formats import weight_only as wo
from runner.formats.backend_table import Backend, WeightOnlyFormat
from runner.formats.backends import IntGrid
from runner.formats.base import tensor_type_table

GPTQ_PARTS = ("qweight", "qzeros", "scales", "g_idx")


def tensor_types(out_dir: Path) -> Dict[str, Dict]:
    """What the folder stores per base parameter: packed GPTQ layers (their weights, with the bytes of
    their zeros, scales and g_idx) and every other tensor by dtype."""
    qc = json.loads((out_dir / "config.json").read_text())["quantization_config"]
    packed = f"GPTQ INT{qc['bits']} g{qc['group_size']}"
    elements: Dict[str, int] = {}
    nbytes: Dict[str, int] = {}
    counts: Dict[str, int] = {}

    def add(kind, n, b):
        elements[kind], nbytes[kind], counts[kind] = (
            elements.get(kind, 0) + n,
            nbytes.get(kind, 0) + b,
            counts.get(kind, 0) + 1,
        )

    for f in sorted(out_dir.glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            keys = set(st.keys())
            layers = {k[: -len(".qweight")] for k in keys if k.endswith(".qweight")}
            for layer in sorted(layers):
                qweight = st.get_slice(f"{layer}.qweight").get_shape()  # (in x bits / 32, out) int32
                parts = [st.get_tensor(f"{layer}.{p}") for p in GPTQ_PARTS if f"{layer}.{p}" in keys]
                add(
                    packed, qweight[0] * 32 // qc["bits"] * qweight[1], sum(t.numel() * t.element_size() for t in parts)
                )
            for name in sorted(keys):
                if name.rsplit(".", 1)[0] in layers:
                    continue
                t = st.get_tensor(name)
                add(str(t.dtype).replace("torch.", ""), t.numel(), t.numel() * t.element_size())
    return tensor_type_table(counts, elements, nbytes)


def _auto_round(model, cfg, samples, hardware, out_dir):
    from runner.formats.backends import autoround_backend

    batch_size = min(cfg.batch_size, len(samples))  # auto-round cannot draw more samples per step than it has
    autoround_backend.quantize(
        model.path,
        out_dir,
        samples,
        IntGrid.of(cfg),
        iters=cfg.iters,
        batch_size=batch_size,
        lr=cfg.lr,
        device=hardware.device,
    )
    return {
        "checkpoint_format": "GPTQ v1 (qweight/qzeros/scales/g_idx), auto-round export auto_gptq",
        "tuning": {"iters": cfg.iters, "batch_size": batch_size, "lr": cfg.lr if cfg.lr is not None else "1/iters"},
    }


class AutoRoundFormat(WeightOnlyFormat):
    USES_CALIBRATION = True
    BITS = "bits"
    GROUP = "group_size"
    # gptqmodel + optimum: transformers loads the GPTQ checkpoint with them. 4 bits: the width checked here.
    BACKENDS = {"auto_round": Backend(("auto_round", "gptqmodel", "optimum"), "autoround", _auto_round, bits=(4,))}
    LIBRARIES = ("torch", "transformers", "auto-round", "gptqmodel")

    def check(self, cfg, model) -> None:
        if cfg.iters < 1:
            raise UserError(
                "format.iters",
                f"{cfg.iters} tuning steps per block",
                "use format.iters >= 1 (200 is AutoRound's default, format=autoround_int4_cpu takes fewer)",
            )
        if cfg.batch_size < 1:
            raise UserError("format.batch_size", f"{cfg.batch_size} samples per step", "use format.batch_size >= 1")
        if cfg.lr is not None and cfg.lr <= 0:
            raise UserError(
                "format.lr", f"{cfg.lr} is not a learning rate", "use a positive number, or null for 1/iters"
            )
        wo.check_group_size(model, cfg.group_size, "format.group_size")

    def quantize(self, model, cfg, calibration, hardware, out_dir: Path, cache):
        facts = super().quantize(model, cfg, calibration, hardware, out_dir, cache)
        facts["tensor_types"] = tensor_types(out_dir)  # after store_fp16: what the files hold
        return facts
