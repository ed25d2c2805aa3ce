"""Format registry: one module per format family, one YAML per preset under conf/format/.

The families' table (schema, implementation, engines) is runner/config/formats.py FAMILIES, light, so
composing a config never imports a library; a family's module is imported when a job asks for it.
"""

import importlib
from typing import Dict

from runner.config.formats import FAMILIES
from runner.errors import UserError
from runner.formats.base import Format

_instances: Dict[str, Format] = {}


def get_format(family: str) -> Format:
    if family not in FAMILIES:
        raise UserError("format.family", f"unknown format family '{family}'", f"use one of {sorted(FAMILIES)}")
    if family not in _instances:
        module, cls = FAMILIES[family].implementation.split(":")
        _instances[family] = getattr(importlib.import_module(module), cls)()
    return _instances[family]


def load_format_preset(name: str, key: str):
    """The validated config of conf/format/<name>.yaml, outside of the job's composition (e.g. the eval baseline)."""
    from runner.config.presets import load_preset

    return load_preset("format", name, key)
