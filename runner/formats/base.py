"""What every format provides: a config schema and a quantize function writing an artifact folder."""

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Dict, Optional, Tuple

if TYPE_CHECKING:  # for the types only: the registry imports this module, and it stays light
    from runner.cache import Cache
    from runner.config.formats import FormatConfig
    from runner.config.schema import CalibrationConfig, HardwareConfig

# The model is a runner.data.models.ModelSource; that module reads GGUF files with runner.formats.gguf, so naming
# its type here, even for the type checker only, would make the import cycle tests/unit/test_layering.py forbids.
Model = Any


@dataclass(frozen=True)
class WeightBits:
    """Bits per weight a format stores, known before quantizing (the pre-flight fit check, runner/benchmark/fit.py):
    `linear` for the decoder blocks' linear layers, scales and zero points included; `other` for the embeddings and
    norms, `head` for lm_head (None: the same as `other`); `what` says where the numbers come from."""

    linear: float
    other: Optional[float] = None  # None: the base model's own dtype
    head: Optional[float] = None
    what: str = ""


def group_overhead_bits(bits: int, group_size: int, zero_point: bool = True) -> float:
    """Per weight, a group's fp16 scale (+ a packed `bits`-wide zero point) shared by `group_size` weights; a
    per-row group (-1) costs next to nothing at LLM widths."""
    return 0.0 if group_size <= 0 else (16 + (bits if zero_point else 0)) / group_size


class Format:
    """One format family (its row, schema and engines: runner/config/formats.py). Subclasses implement quantize()."""

    USES_CALIBRATION: ClassVar[bool] = False  # when True the calibration config is part of the cache key
    # the torch engine computes this family's artifacts in fp32 on CPU (manifest cpu_compute_dtype)
    CPU_COMPUTE_FP32: ClassVar[bool] = False

    def weight_bits(
        self, cfg: "FormatConfig", base_config: Optional[dict] = None, tensor_parallel: int = 1
    ) -> Optional[WeightBits]:
        """What the artifact will store per weight, from the preset (and, for settings it leaves to the model, the
        model's config.json at this tensor parallel size); None where the family cannot say."""
        return None

    def uses_calibration(self, cfg: "FormatConfig") -> bool:
        return self.USES_CALIBRATION

    def resolve(
        self, cfg: "FormatConfig", model: Model, hardware: "HardwareConfig"
    ) -> Tuple["FormatConfig", Dict[str, Any]]:
        """The settings a preset leaves to the model or the machine (e.g. a group size of null), decided: the config
        the artifact is made from and keyed by, and the decisions with their reasons (the manifest's `resolved`,
        logged as params). Called with the resolved model, before validate() and before the artifact's key."""
        return cfg, {}

    def validate(self, cfg: "FormatConfig", model: Optional[Model]) -> None:
        """Raise UserError for settings this model or machine cannot run. Called before any work (with no model
        when the job checks its config before resolving one)."""

    def library_versions(self) -> Dict[str, str]:
        """Versions of the libraries whose output this format depends on (part of the cache key)."""
        return {}

    def quantize(
        self,
        model: Model,
        cfg: "FormatConfig",
        calibration: "CalibrationConfig",
        hardware: "HardwareConfig",
        out_dir: Path,
        cache: "Cache",
    ) -> Dict[str, Any]:
        """Write the artifact into out_dir (an empty temp folder) and return manifest extras.

        cfg, calibration and hardware are the job's config nodes (OmegaConf configs validated against these
        schemas; cfg against the family's own FormatConfig subclass).

        `cache` (runner.cache.Cache) is for intermediate results shared between presets of the
        family (e.g. GGUF's f16 conversion, EXL2's measurement): cache.get / cache.put.

        The returned dict must hold at least `weight_files` (names inside out_dir whose bytes
        count as the model's size) and may add format-specific facts (e.g. tensor type histograms).
        """
        raise NotImplementedError


def tensor_type_table(counts: Dict[str, int], elements: Dict[str, int], nbytes: Dict[str, int]) -> Dict[str, Any]:
    """The manifest's tensor_types from each type's tensor count, parameters and stored bytes, largest share first."""
    total = sum(elements.values()) or 1
    return {
        k: {
            "tensors": counts[k],
            "params_pct": round(100.0 * elements[k] / total, 1),
            "bits_per_weight": round(8.0 * nbytes[k] / elements[k], 3),
        }
        for k in sorted(elements, key=lambda k: elements[k], reverse=True)
    }


def describe_tensor_types(types: Dict[str, Dict[str, Any]]) -> str:
    """'Q5_0 62%, Q8_0 21%, Q4_K 12%': what a file really stores, by share of parameters.

    Formats that store mixed types report them in the manifest as `tensor_types`
    ({type: {"tensors": n, "params_pct": p, "bits_per_weight": b}}).
    """
    return ", ".join(f"{n} {v['params_pct']:.0f}%" for n, v in types.items())
