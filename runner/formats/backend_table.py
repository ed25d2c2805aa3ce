"""The weight-only families (gptq, awq, int8, nf4) as tables: backend -> what it needs and how it quantizes.

A family declares BACKENDS (one `Backend` row per implementation, `format.backend` picks one) and
the name of its bit-width setting; validate, the library check and the quantize prelude/epilogue
are shared here. A row's `quantize` imports its library only when it runs (runner/formats/backends/).
"""

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

from runner.config import model_config
from runner.formats import group_size as gs
from runner.formats import weight_only as wo
from runner.formats.base import Format, WeightBits, group_overhead_bits
from runner.system import packages

log = logging.getLogger(__name__)

# (model, format cfg, calibration token ids or None, hardware, out_dir) -> manifest facts (checkpoint_format, ...)
QuantizeFn = Callable[[Any, Any, Any, Any, Path], Dict[str, Any]]


@dataclass(frozen=True)
class Backend:
    modules: Tuple[str, ...]  # Python packages it needs, checked without importing them
    extra: str  # the pip extra that installs them
    quantize: QuantizeFn
    bits: Tuple[int, ...] = ()  # bit widths it can write (empty: the family has no bit-width setting)
    store_fp16: bool = True  # re-save the unquantized tensors left in fp32 in 16 bits (wo.store_unquantized)


class WeightOnlyFormat(Format):
    BACKENDS: ClassVar[Dict[str, Backend]]
    BITS: ClassVar[Optional[str]] = None  # the config field holding the bit width, checked against Backend.bits
    GROUP_SIZE: ClassVar[Optional[str]] = None  # the config field holding the group size; null there: the model's
    LIBRARIES: ClassVar[Tuple[str, ...]]  # distributions whose versions are part of the cache key
    CPU_COMPUTE_FP32 = True  # wo.CPU_FP32 in the manifest

    def weight_bits(self, cfg, base_config: Optional[dict] = None, tensor_parallel: int = 1):
        """A group size left to the model (null) is the one group_size.py's rule gives on base_config's widths."""
        if self.BITS is None or self.GROUP_SIZE is None:
            return None
        bits, group = int(getattr(cfg, self.BITS)), getattr(cfg, self.GROUP_SIZE)
        if group is None:
            group = gs.auto_group_size(base_config or {}, tensor_parallel)[0]
        group = int(group)
        extra = group_overhead_bits(bits, group, zero_point=_has_zero_point(cfg))
        return self._stored(cfg, bits + extra, f"{bits}-bit, group {group}: +{extra:.3f} bits of scales/zeros")

    def _stored(self, cfg, linear: float, what: str) -> WeightBits:
        """The rest of the model: re-saved in fp16 (store_fp16), else kept in the base model's dtype."""
        kept = 16.0 if self.BACKENDS[cfg.backend].store_fp16 else None
        return WeightBits(linear, kept, what=what + ("; embeddings, norms, lm_head fp16" if kept else ""))

    def validate(self, cfg, model) -> None:
        wo.check_choice("format.backend", cfg.backend, self.BACKENDS)
        backend = self.BACKENDS[cfg.backend]
        if self.BITS:
            wo.check_choice(f"format.{self.BITS}", getattr(cfg, self.BITS), backend.bits, f" by backend {cfg.backend}")
        self.check(cfg, model)
        key = "format.backend"  # the library last: a config mistake is named even where the library is missing
        packages.require(backend.modules, key, f"backend '{cfg.backend}'", packages.extra_fix(backend.extra, key))

    def resolve(self, cfg, model, hardware):
        """The group size: the user's where set, else runner/formats/group_size.py's rule on this model's widths
        (per GPU at the profile's tensor parallel size). The resolved value is in the config the key is made from."""
        # the dtype the backends that take one (gptqmodel GPTQ, llm-compressor) run the model in: part of the key
        decided = {"backend_dtype": wo.quantize_dtype(model, hardware)}
        if not self.GROUP_SIZE:
            return cfg, decided
        key = f"format.{self.GROUP_SIZE}"
        config = model_config.read(model.path)
        tp = hardware.tensor_parallel_size if hardware.device.startswith("cuda") else 1
        size = cfg[self.GROUP_SIZE]
        if size is None:
            widths = wo.linear_widths(model.path).values()
            size, why = gs.auto_group_size(config, tp, widths, source_block(model))
        else:
            why = f"{size}: set by {key}"
            misaligned = gs.misaligned_under_tp(size, config, tp)
            if misaligned:  # the torch engine runs it; vLLM at this tensor parallel size refuses it
                why += f"; does not divide {misaligned} per GPU at tensor parallel {tp} (vLLM refuses that)"
                log.warning("%s=%s %s", key, size, why)
        resolved = copy.deepcopy(cfg)
        resolved[self.GROUP_SIZE] = size
        return resolved, {**decided, "group_size": size, "group_size_why": why}

    def check(self, cfg, model) -> None:
        """The family's own settings (group size, damping...): UserError naming the key."""

    def library_versions(self):
        return {**packages.versions(*self.LIBRARIES), **wo.LAYOUT}

    def quantize(self, model, cfg, calibration, hardware, out_dir: Path, cache):
        from runner.data.calibration import load_calibration

        calib = load_calibration(calibration, model, cache) if self.USES_CALIBRATION else None
        wo.set_threads(hardware)
        backend = self.BACKENDS[cfg.backend]
        facts = backend.quantize(model, cfg, calib.samples if calib else None, hardware, out_dir)
        if backend.store_fp16:  # in 16 bits: fp16 after a fp32 run, else the dtype the backend ran in
            wo.store_unquantized(out_dir, wo.stored_dtype(facts.get("quantize_dtype", "float32")))
        if calib:
            facts["calibration"] = calib.manifest()
        return wo.finish(model, out_dir, backend=cfg.backend, **facts, **wo.CPU_FP32)


def source_block(model) -> Optional[int]:
    """The smallest quantization block (weights per scale) of the GGUF the model's weights were dequantized from;
    None for weights that did not come from a quantized GGUF."""
    path = getattr(model, "source_gguf", None)
    if not path or not Path(path).is_file():
        return None
    import gguf

    from runner.formats.gguf.files import read_header

    blocks = {gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t.type_id)][0] for t in read_header(path).tensors}
    quantized = [b for b in blocks if b > 1]  # F32/F16/BF16 store one weight per "block"
    return min(quantized) if quantized else None


def _has_zero_point(cfg) -> bool:
    """GPTQ v1 checkpoints store qzeros even when symmetric; AWQ and AutoRound only asymmetric."""
    if cfg.family == "gptq":
        return True
    return bool(getattr(cfg, "zero_point", not getattr(cfg, "sym", True)))
