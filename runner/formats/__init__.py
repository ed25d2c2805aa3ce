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

# Each YAML under conf/format/ starts from its family's schema: `- /schema/format/<family>@_here_`.
SCHEMA_GROUP = "schema/format"
FORMAT_SCHEMAS = {family: f.SCHEMA for family, f in FORMATS.items()}


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
    schemas = [f for f in map(_schema_family, raw.pop("defaults", [])) if f in FORMAT_SCHEMAS]
    if not schemas:
        raise UserError(key, f"{path} does not start from a format schema",
                        f"add `- /{SCHEMA_GROUP}/<family>@_here_` to its defaults, family one of {sorted(FORMAT_SCHEMAS)}")
    return OmegaConf.merge(OmegaConf.structured(FORMAT_SCHEMAS[schemas[0]]), raw)


def _schema_family(entry) -> str:
    """'/schema/format/gptq@_here_' -> 'gptq'; anything else -> ''."""
    if not isinstance(entry, str):
        return ""
    path = entry.split("@", 1)[0].lstrip("/")
    prefix = SCHEMA_GROUP + "/"
    return path[len(prefix):] if path.startswith(prefix) else ""
