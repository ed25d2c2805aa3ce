"""Format registry: one module per format family, one YAML per preset under conf/format/."""
from pathlib import Path
from typing import Dict

from runner.errors import UserError
from runner.formats.base import Format
from runner.formats.exl2 import Exl2Format
from runner.formats.gguf import GgufFormat
from runner.formats.torch_dtype import TorchDtypeFormat
from runner.formats import awq, gptq, int8, nf4  # weight-only INT4 / INT8 (calibrated or not)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
FORMATS: Dict[str, Format] = {f.FAMILY: f for f in (TorchDtypeFormat(), GgufFormat())}
FORMATS.update({f.FAMILY: f for f in (Exl2Format(),)})  # CUDA only; imports exllamav2 in a subprocess
FORMATS.update({f.FAMILY: f for f in (gptq.GptqFormat(), awq.AwqFormat(), int8.Int8Format(), nf4.Nf4Format())})

# ConfigStore names that the YAMLs under conf/format/ put first in their defaults list.
FORMAT_SCHEMAS = {f"{family}_schema": f.SCHEMA for family, f in FORMATS.items()}


def get_format(family: str) -> Format:
    if family not in FORMATS:
        raise UserError("format.family", f"unknown format family '{family}'", f"use one of {sorted(FORMATS)}")
    return FORMATS[family]


def load_format_preset(name: str, key: str):
    """The validated config of conf/format/<name>.yaml, outside of a Hydra composition (e.g. the eval baseline)."""
    from omegaconf import OmegaConf

    path = CONF_DIR / "format" / f"{name}.yaml"
    if not path.exists():
        options = sorted(p.stem for p in (CONF_DIR / "format").glob("*.yaml"))
        raise UserError(key, f"no format preset '{name}'", f"use one of {options}")
    raw = OmegaConf.load(path)
    schemas = [d for d in raw.pop("defaults", []) if isinstance(d, str) and d in FORMAT_SCHEMAS]
    if not schemas:
        raise UserError(key, f"{path} does not start from a format schema", f"add one of {sorted(FORMAT_SCHEMAS)} to its defaults")
    return OmegaConf.merge(OmegaConf.structured(FORMAT_SCHEMAS[schemas[0]]), raw)
