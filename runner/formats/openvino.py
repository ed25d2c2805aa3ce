"""OpenVINO IR with NNCF weight compression (INT8 per channel, INT4 in groups), through optimum-intel.

The export runs in .venv-openvino (`make venv-openvino`; runner/engines/workers/openvino_worker.py `export`), a
subprocess
like the GGUF converter: optimum-intel traces the HF folder to an OpenVINO IR and NNCF compresses the weights
data-free (no calibration text). The artifact is what `OVModelForCausalLM.from_pretrained` reloads: the IR
(openvino_model.xml + .bin) plus config.json / generation_config.json. Size = the .bin (every constant: compressed
weights, their scales and zero points, norms); the manifest's `tensor_types` are the weights by stored element type.
"""

import json
from pathlib import Path

from runner.engines import openvino as ov_engine
from runner.errors import UserError
from runner.formats.base import Format, WeightBits, group_overhead_bits

PRECISIONS = ("f32", "bf16", "f16", "")
WEIGHT_FILE = "openvino_model.bin"
BITS_OF = {"u8": 8, "i8": 8, "u4": 4, "i4": 4, "nf4": 4, "f4e2m1": 4, "f32": 32, "f16": 16, "bf16": 16}


def compressed_widths(model_path: Path) -> dict:
    """The row lengths NNCF's groups must divide: hidden_size (q/k/v/o, gate/up inputs) and intermediate_size (down)."""
    config = json.loads((Path(model_path) / "config.json").read_text())
    return {k: int(config[k]) for k in ("hidden_size", "intermediate_size") if config.get(k)}


class OpenvinoFormat(Format):
    def weight_bits(self, cfg, base_config=None, tensor_parallel=1):
        bits = int(cfg.bits)
        linear = bits + group_overhead_bits(bits, int(cfg.group_size), zero_point=not cfg.sym)
        rest = 8.0 if bits == 8 or not cfg.all_layers else linear  # NNCF: embeddings/lm_head INT8 unless all_layers
        return WeightBits(linear, rest, what=f"NNCF INT{bits}, group {cfg.group_size}")

    def validate(self, cfg, model) -> None:
        if cfg.engine != "openvino":
            raise UserError(
                "format.engine",
                f"an OpenVINO IR runs on the openvino engine, not '{cfg.engine}'",
                "set format.engine=openvino",
            )
        if cfg.bits not in (4, 8):
            raise UserError("format.bits", f"NNCF compresses weights to 8 or 4 bits, not {cfg.bits}", "use 8 or 4")
        if cfg.bits == 8 and cfg.group_size != -1:
            raise UserError(
                "format.group_size",
                f"NNCF's INT8 is per output channel; group_size {cfg.group_size} is for INT4",
                "set format.group_size=-1 for bits=8",
            )
        if cfg.bits == 4 and cfg.group_size <= 0 and cfg.group_size != -1:
            raise UserError("format.group_size", f"{cfg.group_size} is not a group size", "use e.g. 32, 64, 128 or -1")
        if (
            cfg.bits == 4 and cfg.group_size > 0 and model is not None
        ):  # the job validates once before the model is resolved
            widths = compressed_widths(model.path)
            for name, width in widths.items():
                if width % cfg.group_size:
                    fits = [g for g in (128, 64, 32, 16) if all(w % g == 0 for w in widths.values())] or [-1]
                    raise UserError(
                        "format.group_size",
                        f"{cfg.group_size} does not divide the model's {name} {width}",
                        f"use one of {fits}",
                    )
        if not 0 < cfg.ratio <= 1:
            raise UserError(
                "format.ratio", f"{cfg.ratio} is not a share in (0, 1]", "use e.g. 1.0 (every layer INT4) or 0.8"
            )
        if cfg.inference_precision not in PRECISIONS:
            raise UserError(
                "format.inference_precision",
                f"unknown precision '{cfg.inference_precision}'",
                f"use one of {list(PRECISIONS)} ('' = OpenVINO's default)",
            )
        dq = cfg.dynamic_quantization_group_size
        if dq is not None and dq < 0:
            raise UserError(
                "format.dynamic_quantization_group_size",
                f"{dq} is not a group size",
                "use 0 (float activations), a group size such as 32, or null (OpenVINO's default)",
            )
        ov_engine.require_venv("format.family")

    def library_versions(self):
        return ov_engine.installed_versions() or {}

    def quantize(self, model, cfg, calibration, hardware, out_dir: Path, cache):
        settings = {
            "src": str(model.path),
            "out": str(out_dir),
            "bits": int(cfg.bits),
            "sym": bool(cfg.sym),
            "group_size": int(cfg.group_size),
            "ratio": float(cfg.ratio),
            "all_layers": bool(cfg.all_layers) if cfg.bits == 4 else None,
        }
        report = ov_engine.run_export(settings, int(hardware.threads))
        if not (out_dir / "openvino_model.xml").exists():
            raise RuntimeError(f"the OpenVINO export wrote no openvino_model.xml into {out_dir}")
        return {
            "weight_files": [WEIGHT_FILE],
            "tensor_types": tensor_types(report["constants"]),
            "inference_precision": cfg.inference_precision or None,
            "dynamic_quantization_group_size": cfg.dynamic_quantization_group_size,
            "compression": {
                k: report["quantization_config"].get(k)
                for k in ("bits", "sym", "group_size", "ratio", "all_layers", "dtype")
            },
            "export_s": report["export_s"],
            "openvino_versions": report["versions"],
        }


def tensor_types(constants: dict) -> dict:
    """The worker's constants-by-type as the manifest's tensor_types (weights only; scales, norms: in the bytes)."""
    weights = {k: v for k, v in constants.items() if k in BITS_OF}
    total = sum(v["elements"] for v in weights.values()) or 1
    return {
        k: {
            "tensors": v["tensors"],
            "params_pct": round(100.0 * v["elements"] / total, 1),
            "bits_per_weight": BITS_OF[k],
        }
        for k, v in sorted(weights.items(), key=lambda kv: kv[1]["elements"], reverse=True)
    }
