"""Format registry: one module per format family, one YAML per preset under conf/format/.

The families' table (schema, implementation, engines) is runner/config/formats.py FAMILIES, light, so
composing a config never imports a library; a family's module is imported when a job asks for it.
"""

from runner.config.formats import FAMILIES
from runner.formats.base import Format
from runner.system.registry import LazyInstances

_instances: LazyInstances[Format] = LazyInstances(FAMILIES, "format.family", "format family")


def get_format(family: str) -> Format:
    return _instances.get(family)


def load_format_preset(name: str, key: str):
    """The validated config of conf/format/<name>.yaml, outside of the job's composition (e.g. the eval baseline)."""
    from runner.config.presets import load_preset

    return load_preset("format", name, key)
