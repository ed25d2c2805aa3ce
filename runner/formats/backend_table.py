"""The weight-only families (gptq, awq, int8, nf4) as tables: backend -> what it needs and how it quantizes.

A family declares BACKENDS (one `Backend` row per implementation, `format.backend` picks one) and
the name of its bit-width setting; validate, the library check and the quantize prelude/epilogue
are shared here. A row's `quantize` imports its library only when it runs (runner/formats/backends/).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Optional, Tuple

from runner.formats import weight_only as wo
from runner.formats.base import Format, WeightBits, group_overhead_bits
from runner.system import packages

# (model, format cfg, calibration token ids or None, hardware, out_dir) -> manifest facts (checkpoint_format, ...)
QuantizeFn = Callable[[Any, Any, Any, Any, Path], Dict[str, Any]]


@dataclass(frozen=True)
class Backend:
    modules: Tuple[str, ...]  # Python packages it needs, checked without importing them
    extra: str  # the pip extra that installs them
    quantize: QuantizeFn
    bits: Tuple[int, ...] = ()  # bit widths it can write (empty: the family has no bit-width setting)
    store_fp16: bool = True  # re-save the unquantized tensors in fp16 (wo.store_fp16)


class WeightOnlyFormat(Format):
    BACKENDS: ClassVar[Dict[str, Backend]]
    BITS: ClassVar[Optional[str]] = None  # the config field holding the bit width, checked against Backend.bits
    LIBRARIES: ClassVar[Tuple[str, ...]]  # distributions whose versions are part of the cache key
    CPU_COMPUTE_FP32 = True  # wo.CPU_FP32 in the manifest
    GROUP: ClassVar[Optional[str]] = None  # the config field holding the group size (scales per group)

    def weight_bits(self, cfg):
        if self.BITS is None or self.GROUP is None:
            return None
        bits, group = int(getattr(cfg, self.BITS)), int(getattr(cfg, self.GROUP))
        extra = group_overhead_bits(bits, group, zero_point=_has_zero_point(cfg))
        return self._stored(cfg, bits + extra, f"{bits}-bit, group {group}: +{extra:.3f} bits of scales/zeros")

    def _stored(self, cfg, linear: float, what: str) -> WeightBits:
        """The rest of the model: re-saved in fp16 (store_fp16), else kept in the base model's dtype."""
        kept = 16.0 if self.BACKENDS[cfg.backend].store_fp16 else None
        return WeightBits(linear, kept, what=what + ("; embeddings, norms, lm_head fp16" if kept else ""))


def _has_zero_point(cfg) -> bool:
    """GPTQ v1 checkpoints store qzeros even when symmetric; AWQ and AutoRound only asymmetric."""
    if cfg.family == "gptq":
        return True
    return bool(getattr(cfg, "zero_point", not getattr(cfg, "sym", True)))

    def validate(self, cfg, model) -> None:
        wo.check_choice("format.backend", cfg.backend, self.BACKENDS)
        backend = self.BACKENDS[cfg.backend]
        if self.BITS:
            wo.check_choice(f"format.{self.BITS}", getattr(cfg, self.BITS), backend.bits, f" by backend {cfg.backend}")
        self.check(cfg, model)
        key = "format.backend"  # the library last: a config mistake is named even where the library is missing
        packages.require(backend.modules, key, f"backend '{cfg.backend}'", packages.extra_fix(backend.extra, key))

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
        if backend.store_fp16:
            wo.store_fp16(out_dir)
        if calib:
            facts["calibration"] = calib.manifest()
        return wo.finish(model, out_dir, backend=cfg.backend, **facts, **wo.CPU_FP32)
