"""Format registry: one module per format family, one YAML per preset under conf/format/.

Lazy by name, like runner.engines: the schemas (runner/config/formats.py) load without any library;
a family's module is imported when a job asks for that family.
"""
import importlib
from typing import Dict

from runner.errors import UserError
from runner.formats.base import Format
from runner.config.formats import FORMAT_SCHEMAS, SCHEMA_GROUP  # noqa: F401  (re-exported)

FORMATS: Dict[str, str] = {  # family -> "module:class"
    "torch_dtype": "runner.formats.torch_dtype:TorchDtypeFormat",
    "gguf": "runner.formats.gguf.format:GgufFormat",
    "exl2": "runner.formats.exl2:Exl2Format",  # CUDA only; imports exllamav2 in a subprocess
    # weight-only INT4 / INT8 (calibrated or not)
    "gptq": "runner.formats.gptq:GptqFormat",
    "awq": "runner.formats.awq:AwqFormat",
    "int8": "runner.formats.int8:Int8Format",
    "nf4": "runner.formats.nf4:Nf4Format",
    "torchao": "runner.formats.torchao_schemes:TorchaoFormat",  # torchao schemes with CPU kernels (W8A8 dynamic)
    "autoround": "runner.formats.autoround:AutoRoundFormat",  # auto-round SignRound, GPTQ v1 checkpoint
    "openvino": "runner.formats.openvino:OpenvinoFormat",  # OpenVINO IR + NNCF INT8/INT4, exported in .venv-openvino
}
_instances: Dict[str, Format] = {}


def get_format(family: str) -> Format:
    if family not in FORMATS:
        raise UserError("format.family", f"unknown format family '{family}'", f"use one of {sorted(FORMATS)}")
    if family not in _instances:
        module, cls = FORMATS[family].split(":")
        _instances[family] = getattr(importlib.import_module(module), cls)()
    return _instances[family]


def load_format_preset(name: str, key: str):
    """The validated config of conf/format/<name>.yaml, outside of the job's composition (e.g. the eval baseline)."""
    from runner.config.presets import load_preset

    return load_preset("format", name, key)
